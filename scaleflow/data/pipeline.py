"""From a dataset and its shard plan to the tf.data pipeline each input pipeline trains on.

`plan_input` is pure NumPy (shared with `mode=shards` and `mode=plan`); `input_fn` returns the
function a strategy hands to `distribute_datasets_from_function`, so the records a pipeline reads are
exactly the ones the plan assigned to it (TensorFlow's own auto-sharding is never relied on).

Shard level (`data.shard_level`):
- `file` needs a file-backed source (tfrecord, image_folder: `DataInfo.files`) with at least as many
  *training* files as pipelines, and no `data.shard_key` (a record key can't follow a file) and not
  `data.reshuffle_each_epoch` (a per-epoch file partition would change the steps per epoch). The
  validation split is then a seeded set of whole files (round(files x validation_split), at least
  one): validation files are sharded by file too when there are at least as many as pipelines, else by
  record over the validation files only (its read amplification is reported).
- `record` works on every source; file-backed pipelines open only the files holding their records.
- `auto` picks `file` when it is possible, else `record`, and says why in the log and run.json.

The number of input pipelines is the strategy's `Distribution.num_pipelines` (one per worker process
for tf.distribute strategies and per rank for Horovod); `mode=shards` uses `strategy.num_workers`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from scaleflow.data.base import DataInfo, Dataset
from scaleflow.data.sharding import (ShardPlan, files_of, records_of, shard_files, shard_records, split_files,
                                     split_indices, validation_file_count)
from scaleflow.errors import ConfigError

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


def check_shard_config(cfg) -> None:
    """The sharding rules that need only the config (no data, no TensorFlow), for config validation
    before anything launches; `plan_input` checks them again along with those that need the data.

    Example:
        >>> check_shard_config(compose(["data.shard=hash", "data.reshuffle_each_epoch=true"]))
        Traceback (most recent call last):
        scaleflow.errors.ConfigError: data.reshuffle_each_epoch=True: expected false unless data.shard=random...
    """
    from scaleflow import registry
    from scaleflow.data.base import InMemoryDataset

    data = cfg.data
    _check_reshuffle(data)
    if data.shard_level != "file":
        return
    blocker = _record_keyed(data)
    if issubclass(registry.get("dataset", data.name), InMemoryDataset):
        blocker = f"the {data.name} dataset is read into memory, not by file"
    if blocker:
        raise ConfigError("data.shard_level", "file", "record or auto for this source",
                          f"File-level sharding is impossible: {blocker}")


def _check_reshuffle(config) -> None:
    if config.reshuffle_each_epoch and config.shard != "random":
        raise ConfigError("data.reshuffle_each_epoch", True, "false unless data.shard=random",
                          f"data.shard={config.shard} assigns the same records every epoch by definition")


def _record_keyed(config) -> str | None:
    """Why the config itself asks for record-level sharding, or None."""
    if config.shard_key:
        return f"data.shard_key={config.shard_key} keys records, not files"
    if config.reshuffle_each_epoch and config.shard == "random":
        return "data.reshuffle_each_epoch redraws records each epoch"
    return None


def resolve_level(config, info: DataInfo, num_pipelines: int) -> tuple[str, str]:
    """('file' | 'record', why) for `data.shard_level`; an impossible `file` is a ConfigError."""
    files = len(info.files)
    train_files = files - validation_file_count(files, config.validation_split)
    blocker = None
    if not files:
        blocker = "the source is not file-backed (no files to assign)"
    elif _record_keyed(config):
        blocker = _record_keyed(config)
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


def plan_input(dataset: Dataset, config, info: DataInfo, num_pipelines: int, *, log_summary: bool = True) -> InputPlan:
    """Split train/validation, shard each split over `num_pipelines`, even the shards (and log what
    each pipeline reads, unless `log_summary=False`)."""
    if config.batch_size % num_pipelines:
        raise ConfigError("data.batch_size", config.batch_size,
                          f"a multiple of the number of input pipelines ({num_pipelines})")
    _check_reshuffle(config)
    level, reason = resolve_level(config, info, num_pipelines)
    b = config.batch_size // num_pipelines
    files = dict(paths=info.files, file_records=info.file_records)

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
                                       config.uneven, seed=config.seed, **files) if len(val_files) else None
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
                                 **files, **source)

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
    plan = InputPlan(info, num_pipelines, config.batch_size, train, validation, shard=config.shard,
                     shard_key=config.shard_key, level=level, level_reason=reason)
    if log_summary:
        plan.log_summary()  # the training log says what each pipeline reads and keeps
    return plan


def input_fn(dataset: Dataset, config, shard_plan: ShardPlan, *, training: bool, seed: int,
             initial_epoch: int = 0) -> Callable[[Any], Any]:
    """fn(input_context) -> per-replica batches of this pipeline's records, repeating forever, one
    epoch = `shard_plan.steps` steps. Training reshuffles the order every epoch (seeded); with
    `data.reshuffle_each_epoch` the pipeline's records themselves are redrawn every epoch."""
    import tensorflow as tf

    def fn(ctx) -> Any:
        pipeline = ctx.input_pipeline_id if ctx is not None else 0
        if ctx is not None and ctx.num_input_pipelines != shard_plan.num_pipelines:
            from scaleflow.errors import ScaleflowError

            raise ScaleflowError(f"the strategy runs {ctx.num_input_pipelines} input pipelines but the shard "
                                 f"plan has {shard_plan.num_pipelines}")
        per_replica = ctx.get_per_replica_batch_size(config.batch_size) if ctx is not None else config.batch_size
        shuffle = training and config.shuffle_buffer > 0
        need = shard_plan.steps * shard_plan.batch_per_pipeline
        per_epoch = shard_plan.repartition is not None

        def epoch_records(epoch) -> np.ndarray:
            return shard_plan.for_epoch(int(epoch)).epoch_records[pipeline].astype(np.int64)

        if hasattr(dataset, "gather_arrays"):
            # In memory: gather this pipeline's candidates once, then index whole batches per epoch.
            candidates = np.unique(np.concatenate(shard_plan.shards)) if per_epoch else \
                np.unique(shard_plan.epoch_records[pipeline])
            x, y = dataset.gather_arrays(config, candidates)
            x, y = tf.constant(x), tf.constant(y)
            fixed = tf.constant(np.searchsorted(candidates, shard_plan.epoch_records[pipeline]), tf.int64)

            def positions(epoch):
                if not per_epoch:
                    return fixed
                ids = tf.numpy_function(epoch_records, [epoch], tf.int64, stateful=False)
                return tf.reshape(tf.searchsorted(tf.constant(candidates), ids), [need])

            def epoch_batches(epoch):
                order = positions(epoch)
                if shuffle:
                    order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([seed + pipeline, epoch]))
                return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [-1, per_replica]))

            ds = tf.data.Dataset.range(initial_epoch, 2**62).flat_map(epoch_batches)
            ds = ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            def finish(one_epoch, epoch=None):
                # Shuffle within the epoch only, so every epoch holds exactly the plan's records.
                if shuffle:
                    one_epoch = one_epoch.shuffle(min(config.shuffle_buffer, max(1, need)),
                                                  seed=seed + 7919 * pipeline if epoch is None else None,
                                                  reshuffle_each_iteration=True)
                return one_epoch.batch(per_replica, drop_remainder=True)

            ds = _file_pipeline(dataset, config, shard_plan, pipeline, initial_epoch, epoch_records, finish)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        # Seeded shuffles only reproduce if parallel stages keep their order (the cost is negligible:
        # in-memory elements are whole batches).
        options.deterministic = True
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    return fn


def _file_pipeline(dataset: Dataset, config, plan: ShardPlan, pipeline: int, initial_epoch: int,
                   epoch_records: Callable[[int], np.ndarray], finish: Callable[..., Any]) -> Any:
    """One epoch of this pipeline's records from a file-backed source, repeated: open only the files
    the plan lists for this pipeline, keep its records (record level), then cycle or trim to the
    evened epoch. Records come in global id order, so `np.resize`/truncation in `even` match exactly."""
    import tensorflow as tf

    need = plan.steps * plan.batch_per_pipeline
    if not plan.files:  # a dataset without files but without gather_arrays: filter a full read
        mine = np.unique(plan.epoch_records[pipeline])
        return finish(_evened(dataset.take(config, mine), len(mine), need, config.cache)).repeat()
    opened = np.asarray(plan.reads[pipeline], dtype=np.int64)
    ds = dataset.read(config, files=[plan.files[f] for f in opened])
    if plan.level == "file":  # its own files, whole
        return finish(_evened(ds, len(plan.shards[pipeline]), need, config.cache)).repeat()
    all_ids = records_of(opened, plan.file_records)  # global id of each record the opened files hold
    if plan.repartition is None:
        mine = np.unique(plan.epoch_records[pipeline])
        keep = np.zeros(len(all_ids), dtype=bool)
        keep[np.searchsorted(all_ids, mine)] = True
        return finish(_evened(_keep(ds, tf.constant(keep)), len(mine), need, config.cache)).repeat()

    # A new partition every epoch: each epoch filters the opened files again (no cache).
    def keep_mask(epoch) -> np.ndarray:
        mask = np.zeros(len(all_ids), dtype=bool)
        mask[np.searchsorted(all_ids, np.unique(epoch_records(epoch)))] = True
        return mask

    def one_epoch(epoch):
        keep_t = tf.reshape(tf.numpy_function(keep_mask, [epoch], tf.bool, stateful=False), [len(all_ids)])
        mine = _keep(ds, keep_t)
        return finish(mine.repeat().take(need), epoch)

    return tf.data.Dataset.range(initial_epoch, 2**62).flat_map(one_epoch)


def _evened(ds: Any, available: int, need: int, cache: bool) -> Any:
    """One evened epoch from `ds`, which yields `available` records in global id order: its first
    `need` (drop) or `need` cycling through them (repeat), as `sharding.even` decided. Cached after
    trimming, so a partly read dataset is never cached."""
    if need <= available:
        ds = ds.take(need)
        return ds.cache() if cache else ds
    ds = ds.cache() if cache else ds
    return ds.repeat().take(need)


def _keep(ds: Any, keep: Any) -> Any:
    """The records of `ds` whose position is True in the boolean vector `keep`."""
    import tensorflow as tf

    def kept(position, record):
        return tf.gather(keep, position)

    def strip(position, record):
        return record

    return ds.enumerate().filter(kept).map(strip)


__all__ = ["InputPlan", "plan_input", "input_fn", "resolve_level", "files_of"]
