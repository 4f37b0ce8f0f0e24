"""Horovod data parallelism as the training loop sees it, on Horovod's core TensorFlow ops.

Three pieces make Horovod training exactly as correct as tf.distribute:
1. `averaging_optimizer`: the optimizer's `apply()` averages the gradients over all ranks with one
   `grouped_allreduce` before updating. Keras 3 calls `apply()` (horovod.tensorflow.keras hooks only
   Keras 2 methods, so it never averages), and every Keras 3 optimizer goes through it.
2. `BroadcastInitialState`: after Keras has built the model and optimizer (and BackupAndRestore has
   restored them), rank 0's values are broadcast to every rank, so all ranks start identical.
3. `AverageMetrics`: epoch metrics (loss, accuracy, val_*) are averaged over ranks before History,
   the log line and run.json see them; every rank runs the same number of equal-size batches, so the
   average of the ranks' means is the global mean.
Horovod ops have no XLA kernels, so `jit_compile` is off.
"""

from __future__ import annotations

from typing import Any, Callable

from scaleflow.strategies.base import Distribution


class HorovodDistribution(Distribution):
    """One Horovod rank: a process with one replica and one input pipeline.

    Args:
        hvd: the initialised `horovod.tensorflow` module.

    Example:
        import horovod.tensorflow as hvd
        hvd.init()
        distribution = HorovodDistribution(hvd)
        optimizer = distribution.wrap_optimizer(keras.optimizers.Adam(1e-3))
        model.compile(optimizer=optimizer, loss=..., jit_compile=distribution.jit_compile)
        model.fit(distribution.distribute(input_fn), callbacks=distribution.callbacks())
    """

    name = "horovod"
    jit_compile = False  # Horovod's ops have no XLA kernels

    def __init__(self, hvd: Any, collectives: dict | None = None):
        self.hvd = hvd
        self.collectives = dict(collectives or {})
        self.num_workers = hvd.size()
        self.worker_index = hvd.rank()
        self.num_replicas = hvd.size()
        self.num_pipelines = hvd.size()

    def distribute(self, fn: Callable[[Any], Any]) -> Any:
        import tensorflow as tf

        # Each rank is one pipeline with one replica: it reads only its own shard, and its batch is
        # the global batch divided by the number of ranks.
        return fn(tf.distribute.InputContext(self.num_pipelines, self.worker_index, self.num_replicas))

    def wrap_optimizer(self, optimizer: Any) -> Any:
        return averaging_optimizer(optimizer, self.hvd)

    def callbacks(self) -> list:
        from scaleflow.cluster.heartbeat import heartbeat_callback

        beat = heartbeat_callback(self.worker_index)  # lets the launcher name a rank that hangs
        return [broadcast_initial_state(self.hvd), average_metrics(self.hvd)] + ([beat] if beat else [])

    def describe(self) -> dict:
        return {**super().describe(), "backend": "gloo" if self.hvd.gloo_enabled() else "mpi"}

    def tuning(self) -> dict:
        return dict(self.collectives)

    def collective_seconds(self, model, repeats: int = 20) -> float:
        """Median time of averaging this model's gradients over the ranks with one grouped all-reduce,
        as the optimizer does each step, measured in every rank at once (profile=summary)."""
        import statistics
        import time

        import tensorflow as tf

        hvd = self.hvd
        # Arguments, not constants made inside the function: Grappler would fold an all-reduce of
        # constants once, while optimising the graph, and the timed calls would move nothing.
        grads = [tf.ones(v.shape) for v in model.trainable_variables]

        @tf.function(jit_compile=False)
        def all_reduce(grads):
            reduced = hvd.grouped_allreduce(grads, op=hvd.Average)
            return tf.reduce_sum(reduced[-1])

        all_reduce(grads).numpy()
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            all_reduce(grads).numpy()
            times.append(time.perf_counter() - began)
        return statistics.median(times)


def averaging_optimizer(optimizer: Any, hvd: Any) -> Any:
    """`optimizer`, changed in place so that `apply()` first averages gradients across ranks.

    The optimizer's class is replaced by a subclass that overrides only `apply`, so its state,
    hyperparameters and all other behaviour (LossScaleOptimizer included) stay those of the original.
    """
    base = type(optimizer)
    if getattr(base, "_horovod_averaging", False):
        return optimizer

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        present = [i for i, g in enumerate(grads) if g is not None]
        if present and hvd.size() > 1:
            averaged = hvd.grouped_allreduce([grads[i] for i in present], op=hvd.Average)
            for i, g in zip(present, averaged):
                grads[i] = g
        return base.apply(self, grads, trainable_variables)

    optimizer.__class__ = type(f"HorovodAveraging{base.__name__}", (base,),
                               {"apply": apply, "_horovod_averaging": True, "__module__": __name__})
    return optimizer


def _variables(model) -> list:
    """Model then optimizer variables, in Keras' deterministic creation order (same on every rank)."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    return variables


def broadcast_initial_state(hvd: Any):
    """A Keras callback: on train begin, every variable takes rank 0's value."""
    import keras
    import tensorflow as tf

    class BroadcastInitialState(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if hvd.size() == 1:
                return
            for i, variable in enumerate(_variables(self.model)):
                # `variable.value` is the tf.Variable's tensor: Horovod does not understand Keras 3
                # variables. Names are per position, identical on every rank.
                value = hvd.broadcast(tf.convert_to_tensor(variable.value), root_rank=0,
                                      name=f"scaleflow.broadcast.{i}")
                variable.assign(value)

    return BroadcastInitialState()


def average_metrics(hvd: Any):
    """A Keras callback: epoch logs are replaced, in place, by their mean over all ranks."""
    import keras
    import tensorflow as tf

    class AverageMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if not logs or hvd.size() == 1:
                return
            keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float)) or hasattr(v, "dtype"))
            values = tf.constant([float(logs[k]) for k in keys], dtype=tf.float64)
            averaged = hvd.allreduce(values, op=hvd.Average, name=f"scaleflow.metrics.{epoch}").numpy()
            for k, v in zip(keys, averaged):
                logs[k] = float(v)

    return AverageMetrics()
