"""Which records each input pipeline reads: an exact, balanced, reproducible partition.

Pure NumPy, no TensorFlow: every process (worker, host, Horovod rank) computes the same assignment
from the config alone, and `mode=shards` / `mode=plan` can show it without training.

Policies (`data.shard`):
  sequential  contiguous blocks; block sizes differ by at most one
  random      a partition drawn from `data.seed` (sizes differ by at most one)
  hash        pipeline = stable_hash(key) % num_pipelines; same key -> same pipeline, on any host

Every pipeline must run the same number of steps, or a collective waits forever on one that ran out.
`data.uneven` evens the shards: `repeat` tops short shards up with their own records (nothing is
lost; the repeats are counted), `drop` trims long shards (the dropped records are listed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def split_indices(num_examples: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) global record indices: a seeded random `validation_split` fraction is held out."""
    n_val = int(round(num_examples * validation_split))
    if validation_split > 0 and num_examples >= 2:
        n_val = min(max(n_val, 1), num_examples - 1)
    perm = np.random.default_rng([seed, 0x5EED]).permutation(num_examples)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


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
    """Split `indices` (global record ids) into `num_pipelines` disjoint sorted arrays covering them.

    `keys[i]` is the shard key of record `indices[i]` (hash only; None hashes the record id).
    `epoch` draws a new random partition per epoch (random only, with data.reshuffle_each_epoch).
    """
    indices = np.asarray(indices, dtype=np.int64)
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
    """What each pipeline reads in one epoch of one split (train or validation)."""

    shards: list[np.ndarray]  # assigned records per pipeline (a partition of the split)
    epoch_records: list[np.ndarray]  # what each pipeline actually reads per epoch, after evening
    steps: int  # steps per epoch, the same on every pipeline
    batch_per_pipeline: int
    dropped: list[np.ndarray] = field(default_factory=list)
    repeated: list[np.ndarray] = field(default_factory=list)

    def report(self) -> dict:
        counts = [len(s) for s in self.shards]
        mean = (sum(counts) / len(counts)) if counts else 0
        return {"records": counts, "steps": self.steps, "batch_per_pipeline": self.batch_per_pipeline,
                "skew": round(max(counts) / mean, 4) if mean else None,
                "dropped": sum(len(d) for d in self.dropped), "repeated": sum(len(r) for r in self.repeated)}


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
    for s in shards:
        if len(s) >= need:
            records.append(s[:need])
            dropped.append(s[need:])
            repeated.append(s[:0])
        elif len(s) == 0:  # an empty shard cannot repeat anything: the whole epoch is skipped
            records.append(s)
            dropped.append(s[:0])
            repeated.append(s[:0])
        else:
            filled = np.resize(s, need)
            records.append(filled)
            dropped.append(s[:0])
            repeated.append(filled[len(s):])
    if steps and any(len(r) < need for r in records):
        steps, records = 0, [s[:0] for s in shards]
        dropped = list(shards)
    return ShardPlan(shards, records, steps, b, dropped, repeated)
