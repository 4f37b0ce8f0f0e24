"""Several hosts, each with `devices_per_host` devices (GPUs, or logical CPU devices)."""

from __future__ import annotations

from scaleflow.hardware.base import Hardware


class Cluster(Hardware):
    """A cluster of `hardware.hosts` (or `strategy.num_workers` hosts when the list is empty), each with
    `hardware.devices_per_host` devices. Each worker process configures its own host: its GPUs when
    it has some, else its CPU split into `devices_per_host` logical devices.

    Example: `python -m scaleflow strategy=multi_worker hardware=cluster strategy.num_workers=2`
    """

    name = "cluster"

    def figures(self, cfg) -> dict:
        """Planner figures; hosts from `hardware.hosts`, else one per worker."""
        hw = cfg.hardware
        hosts = len(hw.hosts) or cfg.strategy.num_workers
        return {**super().figures(cfg), "hosts": max(1, hosts), "devices_per_host": hw.devices_per_host,
                "single_host": False}

    def describe_figures(self, cfg) -> str:
        return "hardware=cluster"

    def configure(self, cfg) -> dict:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            from scaleflow.hardware.gpu import GPU

            return GPU().configure(cfg)
        from scaleflow.hardware.cpu import CPU

        n = cfg.hardware.devices_per_host
        if n > 1 and cfg.hardware.logical_devices == 1:
            from omegaconf import OmegaConf

            cfg = OmegaConf.merge(cfg, {"hardware": {"logical_devices": n}})
        return CPU().configure(cfg)
