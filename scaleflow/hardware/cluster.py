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

    @staticmethod
    def figures(hw, num_workers: int = 1) -> dict:
        """Planner figures; hosts from `hardware.hosts`, else one per worker."""
        hosts = len(hw.hosts) or num_workers
        return {"hosts": max(1, hosts), "devices_per_host": hw.devices_per_host, "peak_flops": hw.peak_flops,
                "memory_bytes": hw.memory_bytes, "bandwidth_bytes_s": hw.bandwidth_bytes_s,
                "latency_s": hw.latency_s, "inter_host_bandwidth_bytes_s": hw.inter_host_bandwidth_bytes_s,
                "inter_host_latency_s": hw.inter_host_latency_s, "precision": hw.precision,
                "step_overhead_s": hw.step_overhead_s, "shared_compute": False}

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
