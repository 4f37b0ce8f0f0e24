"""The input plan: which records each input pipeline reads, in NumPy (no TensorFlow).

`plan_input` is shared by training, `mode=shards` and `mode=plan`; `scaleflow.data.input` turns a
plan into the tf.data pipelines, so the records a pipeline reads are exactly the ones the plan
assigned to it (TensorFlow's own auto-sharding is never relied on).

Shard level (`data.shard_level`):
- `file` needs a file-backed source (tfrecord, image_folder: `DataInfo.files`) with at least as many
  *training* files as pipelines, and no `data.shard_key` (a record key can't follow a file) and not
  `data.reshuffle_each_epoch` (a per-epoch file partition would change the steps per epoch). The
  validation split is then a seeded set of whole files (round(files x validation_split), at least
  one): validation files are sharded by file too when there are at least as many as pipelines, else by
  record over the validation files only (its read amplification is reported).
- `record` works on every source; file-backed pipelines open only the files holding their records.
- `auto` picks `file` when it is possible, else `record`, and says why in the log and run.json.

The number of input pipelines is the strategy's: `Distribution.num_pipelines` in a run, and
`Strategy.topology(...).pipelines` in `mode=shards` and `mode=plan`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from scaleflow.data.base import DataInfo, Dataset
from scaleflow.data.rules import check_reshuffle, record_keyed
from scaleflow.data.sharding import (ShardPlan, records_of, shard_files, shard_records, split_files, split_indices,
                                     validation_file_count)
from scaleflow.errors import ConfigError
from scaleflow.strategies.base import check_global_batch

log = logging.getLogger("scaleflow")


@dataclass
class InputPlan:
    info: DataInfo
    num_pipelines: int
    global_batch: int
    train: ShardPlan
    validation: ShardPlan | None
    shard: str = "sequential"
    shard_key: str | None = None
    level: str = "record"
    level_reason: str = ""

    def report(self) -> dict:
        """The `data` section of run.json (and the body of shards.json)."""
        out = {"num_examples": self.info.num_examples, "fingerprint": self.info.fingerprint,
               "num_pipelines": self.num_pipelines, "global_batch": self.global_batch,
               "shard": self.shard, "shard_key": self.shard_key, "shard_level": self.level,
               "shard_level_reason": self.level_reason, "num_files": len(self.info.files),
               "train": self.train.report()}
        if "index" in self.info.extra:  # a file-indexed source: what describing reused or built
            out["index"] = self.info.extra["index"]
        if self.validation is not None:
            out["validation"] = {**self.validation.report(), "level_reason": self.validation_reason}
        return out

    @property
    def validation_reason(self) -> str:
        if self.validation is None or self.validation.level == self.level:
            return self.level_reason
        return (f"{len(np.unique(np.concatenate(self.validation.reads)))} validation file(s) < "
                f"{self.num_pipelines} pipelines: its records are split, read amplification reported")

    def log_summary(self) -> None:
        log.info("shard level %s (%s), data.shard=%s over %d input pipeline(s)", self.level, self.level_reason,
                 self.shard, self.num_pipelines)
        for name, plan in (("train", self.train), ("validation", self.validation)):
            if plan is None:
                continue
            report = plan.report()
            log.info("shards (%s, %s level, %s): records per pipeline %s, read %s, amplification %s; %s",
                     name, plan.level, self.shard, report["records"], report["records_read"],
                     report["read_amplification"], plan.describe_uneven())


def resolve_level(config, info: DataInfo, num_pipelines: int) -> tuple[str, str]:
    """('file' | 'record', why) for `data.shard_level`; an impossible `file` is a ConfigError."""
    files = len(info.files)
    train_files = files - validation_file_count(files, config.validation_split)
    blocker = None
    if not files:
        blocker = "the source is not file-backed (no files to assign)"
    elif record_keyed(config):
        blocker = record_keyed(config)
    elif train_files < num_pipelines:
        blocker = (f"{train_files} training file(s) of {files} (after holding out validation files) "
                   f"for {num_pipelines} pipelines")
    if config.shard_level == "record":
        return "record", "data.shard_level=record"
    if blocker is None:
        return "file", f"{train_files} training files >= {num_pipelines} pipelines"
    if config.shard_level == "file":
        raise ConfigError("data.shard_level", "file", "record or auto for this source",
                          f"File-level sharding is impossible: {blocker}")
    return "record", blocker


def decide_cache(plan: ShardPlan, config, info: DataInfo) -> None:
    """data.cache within data.cache_max_mb: a file-backed pipeline holds its epoch in memory only when
    its records (estimated as float32 features plus the label) fit, so a run's memory does not grow
    with the data; a larger split is read from the files every epoch (the log and run.json say so)."""
    per_record = 4 * int(np.prod(info.input_shape or (1,))) + 8 * max(1, len(info.target_names))
    mb = max(plan.kept(p) for p in range(plan.num_pipelines)) * per_record / 2**20 if plan.num_pipelines else 0.0
    limit, wanted = config.get("cache_max_mb"), bool(config.get("cache", True))
    plan.cache = wanted and (limit is None or mb <= limit)
    plan.cache_mb = round(mb, 1)
    if wanted and not plan.cache:
        log.info("data.cache: a pipeline's %.0f MB of records exceed data.cache_max_mb=%s: they are read from "
                 "the files every epoch", mb, limit)


def plan_input(dataset: Dataset, config, info: DataInfo, num_pipelines: int, *, log_summary: bool = True) -> InputPlan:
    """Split train/validation, shard each split over `num_pipelines`, even the shards (and log what
    each pipeline reads, unless `log_summary=False`)."""
    check_global_batch(config.batch_size, num_pipelines, "the input pipelines")
    check_reshuffle(config)
    level, reason = resolve_level(config, info, num_pipelines)
    b = config.batch_size // num_pipelines
    files = dict(paths=info.files, file_records=info.file_records)
    seek = bool(info.extra.get("seek"))  # the source reads records by offset (an index)

    if level == "file":
        train_files, val_files = split_files(len(info.files), config.validation_split, config.seed)
        train = shard_files(config.shard, train_files, num_pipelines, b, config.uneven, seed=config.seed, **files)
        empty = [p for p, shard in enumerate(train.shards) if not len(shard)]
        if empty:  # e.g. hash gave a pipeline no file (or only empty ones): nothing to train on
            blocker = (f"data.shard={config.shard} over {len(train_files)} training files leaves pipeline(s) "
                       f"{empty} without a record")
            if config.shard_level == "file":
                raise ConfigError("data.shard_level", "file", "record or auto for this source",
                                  f"File-level sharding is impossible: {blocker}")
            level, reason = "record", blocker
    if level == "file":
        if len(val_files) >= num_pipelines:
            validation = shard_files(config.shard, val_files, num_pipelines, b, config.uneven, seed=config.seed,
                                     **files)
        else:
            validation = shard_records(config.shard, records_of(val_files, info.file_records), num_pipelines, b,
                                       config.uneven, seed=config.seed, seek=seek, **files) if len(val_files) else None
    else:
        train_idx, val_idx = split_indices(info.num_examples, config.validation_split, config.seed)
        keys = None
        if config.shard == "hash" and config.shard_key:
            keys = np.asarray(dataset.keys(config, config.shard_key))
        source = {} if info.files else {"source_records": info.num_examples}
        if not info.files:
            files = {}

        def shard(indices: np.ndarray, reshuffle: bool) -> ShardPlan:
            return shard_records(config.shard, indices, num_pipelines, b, config.uneven, seed=config.seed,
                                 keys=None if keys is None else keys[indices], reshuffle_each_epoch=reshuffle,
                                 seek=seek, **files, **source)

        train = shard(train_idx, bool(config.reshuffle_each_epoch))
        validation = shard(val_idx, False) if len(val_idx) else None

    if train.steps == 0:
        raise ConfigError("data.batch_size", config.batch_size,
                          f"at most the records per input pipeline ({min(len(s) for s in train.shards)} "
                          f"training records for the smallest of {num_pipelines} pipelines)",
                          "An empty shard cannot be evened; use fewer workers, a smaller batch, more data, "
                          "or data.shard=sequential|random" if min(len(s) for s in train.shards) == 0 else None)
    if validation is not None and validation.steps == 0:
        validation = None
    for split in (train, validation):
        if split is not None and info.files:
            decide_cache(split, config, info)
    plan = InputPlan(info, num_pipelines, config.batch_size, train, validation, shard=config.shard,
                     shard_key=config.shard_key, level=level, level_reason=reason)
    if log_summary:
        plan.log_summary()  # the training log says what each pipeline reads and keeps
    return plan
