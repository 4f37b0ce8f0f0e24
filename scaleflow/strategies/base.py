"""The strategy extension point.

A strategy plugin turns the config into a `Distribution`: what the training loop needs to know about
parallelism. Strategies that need several processes also implement `launch`, which starts them (the
chief process then returns their combined exit status instead of training itself).

Example (a tf.distribute strategy):

    class OneDevice(Strategy):
        name = "one_device"

        def create(self, cfg):
            import tensorflow as tf
            return TFDistribution(self.name, tf.distribute.OneDeviceStrategy("/cpu:0"))
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar

from scaleflow.config.schema import StrategyConfig


class Distribution:
    """Parallelism as the training loop sees it. Defaults describe one process, one replica."""

    name: str = "default"
    num_workers: int = 1  # processes
    worker_index: int = 0
    num_replicas: int = 1  # replicas over all workers (the global batch is split between them)
    num_pipelines: int = 1  # input pipelines over all workers (the records are split between them)
    jit_compile: bool | None = None  # None: let Keras decide

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    def scope(self) -> Any:
        return contextlib.nullcontext()

    def distribute(self, fn: Callable[[Any], Any]) -> Any:
        """A dataset for `model.fit` from fn(input_context) -> this pipeline's per-replica batches."""
        return fn(None)

    def wrap_optimizer(self, optimizer: Any) -> Any:
        return optimizer

    def callbacks(self) -> list:
        return []

    def describe(self) -> dict:
        return {"name": self.name, "num_workers": self.num_workers, "worker_index": self.worker_index,
                "num_replicas": self.num_replicas, "num_pipelines": self.num_pipelines}


class TFDistribution(Distribution):
    """A tf.distribute.Strategy. Input goes through `distribute_datasets_from_function` with
    TensorFlow's auto-sharding off: scaleflow's shard plan decides what each pipeline reads."""

    def __init__(self, name: str, strategy: Any, num_workers: int = 1, worker_index: int = 0):
        self.name, self.strategy = name, strategy
        self.num_workers, self.worker_index = num_workers, worker_index
        self.num_replicas = strategy.num_replicas_in_sync
        self.num_pipelines = num_workers

    def scope(self) -> Any:
        return self.strategy.scope()

    def distribute(self, fn: Callable[[Any], Any]) -> Any:
        import tensorflow as tf

        if self.num_replicas == 1 and self.num_workers == 1:
            return fn(tf.distribute.InputContext(1, 0, 1))
        return self.strategy.distribute_datasets_from_function(fn)


class Strategy:
    name: ClassVar[str]
    Config: ClassVar[type] = StrategyConfig

    def launch(self, cfg, run_dir: str) -> int | None:
        """Start the processes this strategy needs; return their exit status, or None to train here."""
        return None

    def create(self, cfg) -> Distribution:
        """Called in every training process, after the hardware is configured."""
        raise NotImplementedError
