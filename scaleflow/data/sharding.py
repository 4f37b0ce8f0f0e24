"""Which records each input pipeline reads: an exact, balanced, reproducible partition.

Pure NumPy, no TensorFlow: every process (worker, host, Horovod rank) computes the same assignment
from the config alone, and `mode=shards` / `mode=plan` can show it without training.

Policies (`data.shard`):
  sequential  contiguous blocks; block sizes differ by at most one
  random      a partition drawn from `data.seed` (sizes differ by at most one); with
              `data.reshuffle_each_epoch=true` a new partition is drawn for every epoch
  hash        pipeline = stable_hash(key) % num_pipelines; same key -> same pipeline, on any host

Levels (`data.shard_level`, resolved by `pipeline.plan_input`):
  file        the policy partitions *files*; a pipeline opens only its own files (no read
              amplification). hash keys on the file's path relative to the data root.
  record      the policy partitions record ids; a pipeline opens every file holding one of its
              records and keeps its own (records read / kept = read amplification, reported).
              When the source knows where each record is (an index: `seek`), a pipeline reads only
              its own records (amplification 1.0), except with data.reshuffle_each_epoch.

Every pipeline must run the same number of steps, or a collective waits forever on one that ran out.
`data.uneven` evens the shards: `repeat` tops short shards up with their own records (nothing is
lost; the repeats are counted and listed), `drop` trims long shards (the dropped records are counted
and listed). An empty shard cannot be topped up: the epoch then has no step (plan_input refuses it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

# Record ids are listed in run.json / shards.json only up to this many (counts are always given).
MAX_LISTED_IDS = 64


def id_dtype(num_records: int) -> np.dtype:
    """The dtype of record ids: int32 while they fit (half the memory of plans of millions of
    records), int64 beyond."""
    return np.dtype(np.int32) if num_records < 2**31 else np.dtype(np.int64)


def split_indices(num_examples: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) global record indices: a seeded random `validation_split` fraction is held out."""
    n_val = int(round(num_examples * validation_split))
    if validation_split > 0 and num_examples >= 2:
        n_val = min(max(n_val, 1), num_examples - 1)
    dtype = id_dtype(num_examples)
    if n_val == 0:  # the sorted permutation is every index: skip drawing (and sorting) it
        return np.arange(num_examples, dtype=dtype), np.zeros(0, dtype=dtype)
    perm = np.random.default_rng([seed, 0x5EED]).permutation(num_examples)
    return np.sort(perm[n_val:]).astype(dtype), np.sort(perm[:n_val]).astype(dtype)


def validation_file_count(num_files: int, validation_split: float) -> int:
    """Files held out for validation at file level: round(files * split), at least one when split > 0."""
    if validation_split <= 0 or num_files < 2:
        return 0
    return min(max(int(round(num_files * validation_split)), 1), num_files - 1)


def split_files(num_files: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) file indices: at file level the validation split is a seeded set of whole
    files, so no pipeline opens a file to keep only part of it."""
    n_val = validation_file_count(num_files, validation_split)
    perm = np.random.default_rng([seed, 0xF11E]).permutation(num_files)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def file_keys(paths: Sequence[str]) -> np.ndarray:
    """Hash keys of files: the path relative to the files' common root ('cat/001.png',
    'train-00003.tfrecord'), so the assignment does not depend on where a host mounts the data."""
    if not len(paths):
        return np.array([], dtype=object)
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath(absolute) if len(absolute) > 1 else os.path.dirname(absolute[0])
    if len(absolute) > 1 and root in absolute:  # a single-file glob: the root is the file itself
        root = os.path.dirname(root)
    return np.array([os.path.relpath(p, root).replace(os.sep, "/") for p in absolute], dtype=object)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def stable_hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each key that is identical in every process, host and run (never Python's
    salted `hash()`): SplitMix64 for integers, BLAKE2b of the UTF-8 text for anything else."""
    keys = np.asarray(keys)
    if keys.dtype.kind in "iub":
        return _splitmix64(keys.astype(np.int64).view(np.uint64))
    out = np.empty(len(keys), dtype=np.uint64)
    for i, key in enumerate(keys.tolist()):
        text = key if isinstance(key, str) else (key.decode() if isinstance(key, bytes) else repr(key))
        out[i] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return out


def assign(policy: str, indices: np.ndarray, num_pipelines: int, seed: int = 0,
           keys: np.ndarray | None = None, epoch: int = 0) -> list[np.ndarray]:
    """Split `indices` (global record or file ids) into `num_pipelines` disjoint sorted arrays covering them.

    `keys[i]` is the shard key of `indices[i]` (hash only; None hashes the id itself).
    `epoch` draws a new random partition per epoch (random only, with data.reshuffle_each_epoch).
    """
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":  # ids keep their dtype (id_dtype); anything else becomes int64
        indices = indices.astype(np.int64)
    if num_pipelines < 1:
        raise ValueError(f"num_pipelines must be >= 1, received: {num_pipelines}")
    if policy == "sequential":
        return [np.asarray(part) for part in np.array_split(indices, num_pipelines)]
    if policy == "random":
        perm = np.random.default_rng([seed, epoch, 0x5A4D]).permutation(len(indices))
        return [np.sort(part) for part in np.array_split(indices[perm], num_pipelines)]
    if policy == "hash":
        hashed = stable_hash(indices if keys is None else np.asarray(keys))
        owner = (hashed % np.uint64(num_pipelines)).astype(np.int64)
        return [indices[owner == p] for p in range(num_pipelines)]
    raise ValueError(f"policy must be one of hash, random, sequential, received: {policy!r}")


@dataclass
class ShardPlan:
    """What each pipeline reads in one epoch of one split (train or validation).

    Args:
        shards: assigned record ids per pipeline (an exact partition of the split).
        epoch_records: what each pipeline trains on per epoch after evening (all the same length).
        steps: steps per epoch, the same on every pipeline.
        batch_per_pipeline: records per pipeline per step.
        dropped / repeated: per pipeline, the record ids the uneven policy dropped or repeated.
        level: "file" or "record".
        uneven: the uneven policy that produced `epoch_records`.
        files / file_records: the source's files and their record counts (empty in memory).
        reads: per pipeline, the file indices it opens (file-backed sources only).
        source_records: records an in-memory source loads in every pipeline (its whole size).
        repartition: epoch -> ShardPlan, when every epoch draws a new partition (reshuffle_each_epoch).
        seek: record level: each pipeline reads only its own records by offset (the source is indexed).
        cache: whether file-backed pipelines hold their epoch in memory (data.cache within
            data.cache_max_mb, decided by `plan_input`), with `cache_mb` the estimated size; None: data.cache.

    Example:
        >>> plan = even(assign("sequential", np.arange(10), 3), 2, "repeat")
        >>> plan.steps, [len(r) for r in plan.epoch_records]
        (2, [4, 4, 4])
    """

    shards: list[np.ndarray]
    epoch_records: list[np.ndarray]
    steps: int
    batch_per_pipeline: int
    dropped: list[np.ndarray] = field(default_factory=list)
    repeated: list[np.ndarray] = field(default_factory=list)
    level: str = "record"
    uneven: str = "repeat"
    files: tuple[str, ...] = ()
    file_records: tuple[int, ...] = ()
    reads: list[np.ndarray] = field(default_factory=list)
    source_records: int = 0
    repartition: Callable[[int], "ShardPlan"] | None = None
    seek: bool = False
    cache: bool | None = None
    cache_mb: float | None = None

    @property
    def num_pipelines(self) -> int:
        return len(self.shards)

    def for_epoch(self, epoch: int) -> "ShardPlan":
        """The plan of `epoch` (the same plan every epoch unless the partition is redrawn per epoch)."""
        return self.repartition(epoch) if self.repartition is not None and epoch else self

    def kept(self, pipeline: int) -> int:
        """Distinct records the pipeline trains on per epoch. A shard holds each record once and `even`
        keeps a prefix of it (drop) or cycles through all of it (repeat), so this is the shorter of the
        two: no sorted copy of millions of ids per report."""
        return int(min(len(self.epoch_records[pipeline]), len(self.shards[pipeline])))

    def kept_ids(self, pipeline: int) -> np.ndarray:
        """The distinct records the pipeline trains on per epoch, ascending: what np.unique of its epoch
        records gives, without sorting millions of ids (a shard is ascending and `even` keeps a prefix
        of it or cycles through all of it)."""
        return self.shards[pipeline][:self.kept(pipeline)]

    def records_read(self, pipeline: int) -> int:
        """Records the pipeline reads per epoch to get its own: its files at file level; every record
        of each file it opens at record level; the whole source when the source is in memory."""
        if self.level == "file" or self.seek:
            return self.kept(pipeline)
        if self.files:
            return int(np.sum(np.asarray(self.file_records, dtype=np.int64)[self.reads[pipeline]]))
        return int(self.source_records)

    def report(self) -> dict:
        counts = [len(s) for s in self.shards]
        mean = (sum(counts) / len(counts)) if counts else 0
        read = [self.records_read(p) for p in range(self.num_pipelines)]
        kept = [self.kept(p) for p in range(self.num_pipelines)]
        out = {"level": self.level, "records": counts, "steps": self.steps,
               "batch_per_pipeline": self.batch_per_pipeline,
               "skew": round(max(counts) / mean, 4) if mean else None,
               "records_read": read, "records_kept": kept,
               "read_amplification": [round(r / k, 4) if k else None for r, k in zip(read, kept)],
               "dropped": sum(len(d) for d in self.dropped), "repeated": sum(len(r) for r in self.repeated),
               "uneven": self.uneven_report(),
               "reshuffle_each_epoch": self.repartition is not None}
        if self.level == "record" and self.files:
            out["read"] = "seek" if self.seek else "scan"
        if self.cache is not None:
            out["cache"] = {"cached": self.cache, "mb_per_pipeline": self.cache_mb}
        if self.files:
            out["files"] = [len(r) for r in self.reads]
        return out

    def uneven_report(self) -> dict:
        """Exactly what the uneven policy did: counts per pipeline, and the ids when few."""
        out = {"policy": self.uneven,
               "dropped_per_pipeline": [len(d) for d in self.dropped],
               "repeated_per_pipeline": [len(r) for r in self.repeated]}
        for name, parts in (("dropped", self.dropped), ("repeated", self.repeated)):
            total = sum(len(p) for p in parts)
            if 0 < total <= MAX_LISTED_IDS:
                out[f"{name}_ids"] = [np.asarray(p).tolist() for p in parts]
        return out

    def describe_uneven(self) -> str:
        """One line saying what evening does, for logs and the shard table."""
        dropped, repeated = sum(len(d) for d in self.dropped), sum(len(r) for r in self.repeated)
        every = "every epoch" if self.repartition is None else "in epoch 0 (redrawn each epoch)"
        if self.uneven == "repeat":
            return (f"repeat: {repeated} record(s) repeated {every} so each pipeline runs {self.steps} "
                    f"step(s) of {self.batch_per_pipeline}" + (f"; {dropped} dropped (empty shard)" if dropped else ""))
        return (f"drop: {dropped} record(s) dropped {every} so each pipeline runs {self.steps} step(s) "
                f"of {self.batch_per_pipeline}")


def even(shards: list[np.ndarray], batch_per_pipeline: int, policy: str) -> ShardPlan:
    """Give every pipeline the same whole number of batches per epoch.

    repeat: steps = ceil(max shard / batch); short shards cycle through their own records to fill.
    drop:   steps = floor(min shard / batch); each pipeline reads its first steps*batch records.
    """
    counts = [len(s) for s in shards]
    b = batch_per_pipeline
    if policy == "repeat":
        steps = -(-max(counts) // b) if counts and max(counts) else 0
        if min(counts, default=0) == 0:
            steps = 0 if max(counts, default=0) == 0 else steps
    elif policy == "drop":
        steps = min(counts) // b if counts else 0
    else:
        raise ValueError(f"uneven must be one of drop, repeat, received: {policy!r}")
    need = steps * b
    records, dropped, repeated = [], [], []
    shards = list(shards)
    for p, s in enumerate(shards):
        if len(s) >= need:
            records.append(s[:need])
            dropped.append(s[need:])
            repeated.append(s[:0])
        elif len(s) == 0:  # an empty shard cannot repeat anything: the whole epoch is skipped
            records.append(s)
            dropped.append(s[:0])
            repeated.append(s[:0])
        else:
            filled = cycled(s, need)
            records.append(filled)
            dropped.append(filled[:0])  # (a view of `s` would keep the original shard alive)
            repeated.append(filled[len(s):])
            shards[p] = filled[:len(s)]  # the same ids, held once: the shard is the head of its epoch
    if steps and any(len(r) < need for r in records):
        steps, records = 0, [s[:0] for s in shards]
        dropped, repeated = list(shards), [s[:0] for s in shards]
    return ShardPlan(shards, records, steps, b, dropped, repeated, uneven=policy)


def cycled(values: np.ndarray, length: int) -> np.ndarray:
    """`values` repeated cyclically to `length` (what np.resize gives, without the whole repeated
    concatenation np.resize keeps alive under its view: twice the shard for a top-up of a few ids)."""
    out = np.empty(length, dtype=values.dtype)
    filled = min(len(values), length)
    out[:filled] = values[:filled]
    while filled < length:  # doubling (a 1-record shard topped up to millions is log steps, not millions)
        n = min(filled, length - filled)  # `filled` is a multiple of len(values): out[i] = values[i % len]
        out[filled:filled + n] = out[:n]
        filled += n
    return out


def files_of(records: np.ndarray, file_records: Sequence[int]) -> np.ndarray:
    """Indices of the files that hold `records` (global ids run file by file)."""
    ends = np.cumsum(np.asarray(file_records, dtype=np.int64))
    records = np.asarray(records, dtype=np.int64)
    held = np.zeros(len(ends) + 1, dtype=bool)
    for start in range(0, len(records), 1 << 20):  # in chunks: no file id per record for millions of records
        held[np.searchsorted(ends, records[start:start + (1 << 20)], side="right")] = True
    return np.flatnonzero(held).astype(np.int64)


def records_of(files: np.ndarray, file_records: Sequence[int]) -> np.ndarray:
    """Global record ids of `files`, in order."""
    counts = np.asarray(file_records, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    files = np.asarray(files, dtype=np.int64)
    out = np.empty(int(counts[files].sum()) if len(files) else 0, dtype=id_dtype(int(offsets[-1])))
    at = 0  # filled in place: no list of per-file ranges beside the result (millions of records)
    for f in files.tolist():
        n = int(counts[f])
        out[at:at + n] = np.arange(offsets[f], offsets[f + 1])
        at += n
    return out


def shard_files(policy: str, files: np.ndarray, num_pipelines: int, batch_per_pipeline: int, uneven: str, *,
                paths: Sequence[str], file_records: Sequence[int], seed: int = 0) -> ShardPlan:
    """File level: the policy partitions the files `files` (indices into `paths`); each pipeline
    reads all records of its own files, evened to the same number of steps."""
    keys = file_keys(paths)[np.asarray(files, dtype=np.int64)] if policy == "hash" else None
    owned = assign(policy, files, num_pipelines, seed, keys=keys)
    owned = [np.sort(f) for f in owned]  # read in global order: record ids stay ascending
    plan = even([records_of(f, file_records) for f in owned], batch_per_pipeline, uneven)
    return dataclasses.replace(plan, level="file", files=tuple(paths), file_records=tuple(file_records),
                               reads=owned)


def shard_records(policy: str, indices: np.ndarray, num_pipelines: int, batch_per_pipeline: int, uneven: str,
                  *, keys: np.ndarray | None = None, seed: int = 0, reshuffle_each_epoch: bool = False,
                  paths: Sequence[str] = (), file_records: Sequence[int] = (), source_records: int = 0,
                  epoch: int = 0, seek: bool = False) -> ShardPlan:
    """Record level: the policy partitions record ids `indices` (`keys[i]` keys `indices[i]` for hash).
    A file-backed pipeline opens each file holding one of its records; with `reshuffle_each_epoch`
    (random only) it opens every file of the split, since its records change every epoch. `seek`: the
    source reads a pipeline's records by offset (not with reshuffle_each_epoch: those are scanned)."""
    plan = even(assign(policy, indices, num_pipelines, seed, keys=keys, epoch=epoch), batch_per_pipeline, uneven)
    reads = []
    if paths:
        split_files_ = files_of(indices, file_records)
        reads = [split_files_ if reshuffle_each_epoch else files_of(r, file_records) for r in plan.epoch_records]
    repartition = None
    if reshuffle_each_epoch and policy == "random":
        def repartition(e: int) -> ShardPlan:
            return shard_records(policy, indices, num_pipelines, batch_per_pipeline, uneven, seed=seed,
                                 reshuffle_each_epoch=True, paths=paths, file_records=file_records,
                                 source_records=source_records, epoch=e)
    return dataclasses.replace(plan, level="record", files=tuple(paths), file_records=tuple(file_records),
                               reads=reads, source_records=source_records, repartition=repartition,
                               seek=bool(seek and paths and not reshuffle_each_epoch))
