"""Synchronous data parallelism over the devices of one host."""

from __future__ import annotations

from scaleflow.errors import ScaleflowError
from scaleflow.strategies.base import Distribution, Strategy, TFDistribution


def replica_devices(cfg) -> list[str]:
    """GPUs when the hardware target has them, else the logical CPU devices."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if cfg.hardware.name == "gpu" or (gpus and cfg.hardware.name != "cpu"):
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


class Mirrored(Strategy):
    """MirroredStrategy: one replica per GPU, or per logical CPU device (`hardware.logical_devices`),
    gradients all-reduced every step. On a CPU it is for correctness, not speed.

    Example: `python -m scaleflow strategy=mirrored hardware.logical_devices=2`
    """

    name = "mirrored"

    @classmethod
    def validate(cls, cfg) -> None:
        from scaleflow.errors import ConfigError

        replicas = cfg.hardware.logical_devices if cfg.hardware.name == "cpu" else None
        if replicas and cfg.data.batch_size % replicas:
            raise ConfigError("data.batch_size", cfg.data.batch_size,
                              f"a multiple of the number of replicas (hardware.logical_devices={replicas})")

    def create(self, cfg) -> Distribution:
        import tensorflow as tf

        devices = replica_devices(cfg)
        if not devices:
            raise ScaleflowError("strategy=mirrored found no device to mirror over")
        cross_device = None if any("GPU" in d for d in devices) else tf.distribute.ReductionToOneDevice()
        return TFDistribution(self.name, tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device))
