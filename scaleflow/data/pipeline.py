"""From a dataset and its shard plan to the tf.data pipeline each input pipeline trains on.

`plan_input` is pure NumPy (shared with `mode=shards` and `mode=plan`); `input_fn` returns the
function a strategy hands to `distribute_datasets_from_function`, so the records a pipeline reads are
exactly the ones the plan assigned to it (TensorFlow's own auto-sharding is never relied on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from scaleflow.data.base import DataInfo, Dataset
from scaleflow.data.sharding import ShardPlan, assign, even, split_indices
from scaleflow.errors import ConfigError


@dataclass
class InputPlan:
    info: DataInfo
    num_pipelines: int
    global_batch: int
    train: ShardPlan
    validation: ShardPlan | None

    def report(self) -> dict:
        out = {"num_examples": self.info.num_examples, "fingerprint": self.info.fingerprint,
               "num_pipelines": self.num_pipelines, "global_batch": self.global_batch,
               "train": self.train.report()}
        if self.validation is not None:
            out["validation"] = self.validation.report()
        return out


def plan_input(dataset: Dataset, config, info: DataInfo, num_pipelines: int) -> InputPlan:
    """Split train/validation, shard each split over `num_pipelines`, even the shards."""
    if config.batch_size % num_pipelines:
        raise ConfigError("data.batch_size", config.batch_size,
                          f"a multiple of the number of input pipelines ({num_pipelines})")
    train_idx, val_idx = split_indices(info.num_examples, config.validation_split, config.seed)
    keys = dataset.keys(config, config.shard_key) if config.shard == "hash" and config.shard_key else None
    b = config.batch_size // num_pipelines

    def shard(indices: np.ndarray) -> ShardPlan:
        parts = assign(config.shard, indices, num_pipelines, config.seed,
                       keys=None if keys is None else np.asarray(keys)[indices])
        return even(parts, b, config.uneven)

    train = shard(train_idx)
    if train.steps == 0:
        raise ConfigError("data.batch_size", config.batch_size,
                          f"at most the records per input pipeline ({min(len(s) for s in train.shards)} "
                          f"training records for the smallest of {num_pipelines} pipelines)")
    validation = shard(val_idx) if len(val_idx) else None
    if validation is not None and validation.steps == 0:
        validation = None
    return InputPlan(info, num_pipelines, config.batch_size, train, validation)


def input_fn(dataset: Dataset, config, shard_plan: ShardPlan, *, training: bool, seed: int,
             initial_epoch: int = 0) -> Callable[[Any], Any]:
    """fn(input_context) -> per-replica batches of this pipeline's records, repeating forever, one
    epoch = `shard_plan.steps` steps. Training reshuffles every epoch (seeded)."""
    import tensorflow as tf

    def fn(ctx) -> Any:
        pipeline = ctx.input_pipeline_id if ctx is not None else 0
        per_replica = ctx.get_per_replica_batch_size(config.batch_size) if ctx is not None else config.batch_size
        records = shard_plan.epoch_records[pipeline]
        shuffle = training and config.shuffle_buffer > 0
        if hasattr(dataset, "gather_arrays"):
            # In memory: shuffle index vectors per epoch and gather whole batches (vectorised).
            x, y = dataset.gather_arrays(config, records)
            x, y = tf.constant(x), tf.constant(y)
            n = len(records)
            base = tf.range(n, dtype=tf.int64)

            def epoch_batches(epoch):
                order = tf.random.experimental.stateless_shuffle(base, seed=tf.stack([seed + pipeline, epoch])) \
                    if shuffle else base
                return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [-1, per_replica]))

            ds = tf.data.Dataset.range(initial_epoch, 2**62).flat_map(epoch_batches)
            ds = ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = dataset.take(config, np.sort(np.unique(records)))
            if config.cache:
                ds = ds.cache()
            if len(np.unique(records)) != len(records) or len(records) != len(shard_plan.shards[pipeline]):
                ds = ds.repeat().take(len(records))  # the evened epoch: cycle (repeat) or trim (drop)
            if shuffle:
                ds = ds.shuffle(min(config.shuffle_buffer, max(1, len(records))), seed=seed + pipeline,
                                reshuffle_each_iteration=True)
            ds = ds.batch(per_replica, drop_remainder=True).repeat()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        options.deterministic = not training or config.shuffle_buffer == 0
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    return fn
