"""Synchronous data parallelism over the devices of one host."""

from __future__ import annotations

from scaleflow.errors import ScaleflowError
from scaleflow.strategies.base import (CLAIM_ACCELERATORS, CLAIM_DEVICES, Claim, Distribution, Strategy,
                                       TFDistribution, Topology)


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
    def topology(cls, cfg, figures) -> Topology:
        return Topology(hosts=1, processes=1, replicas=figures.devices_per_host, pipelines=1)

    @classmethod
    def suits(cls, cfg, figures) -> bool:
        return super().suits(cfg, figures) and figures.devices_per_host > 1

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        hw = cfg.hardware
        if hw.name == "cluster" and hw.get("devices_per_host", 1) > 1:
            return Claim(CLAIM_DEVICES, f"hardware=cluster: one host with {hw.devices_per_host} devices")
        if hw.name == "cpu" and hw.get("logical_devices", 1) > 1:
            return Claim(CLAIM_DEVICES, f"hardware.logical_devices={hw.logical_devices} CPU replicas")
        if environment.num_gpus and environment.num_gpus > 1:
            return Claim(CLAIM_ACCELERATORS, f"{environment.num_gpus} GPUs visible")
        return None

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str] | None:
        if cfg.hardware.name == "cpu":  # other targets' device counts are known only to TensorFlow
            return cfg.hardware.logical_devices, f"the replicas, hardware.logical_devices={cfg.hardware.logical_devices}"
        return None

    def create(self, cfg) -> Distribution:
        import tensorflow as tf

        devices = replica_devices(cfg)
        if not devices:
            raise ScaleflowError("strategy=mirrored found no device to mirror over")
        cross_device = None if any("GPU" in d for d in devices) else tf.distribute.ReductionToOneDevice()
        return TFDistribution(self.name, tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device))
