"""The host CPU, optionally split into logical devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from scaleflow.config.schema import HardwareConfig, bounded
from scaleflow.errors import ScaleflowError
from scaleflow.hardware.base import Hardware

# A typical core's achieved float32 rate in a dense matmul (AVX2/AVX-512 FMA at ~3 GHz, about two
# thirds of its peak): the planner's figure for hardware=cpu is this times the cores this process may
# use, unless hardware.peak_flops (or a mode=calibrate profile) says otherwise. Measured here on a
# quiet machine: the MLP [1024, 1024] at batch 256 ran at ~115 GFLOP/s per core (2 cores, 8.7 ms per
# 2.0 GFLOP step; benchmarks/bench_scaling.py); 5e10 predicted it 2.4x too slow.
PEAK_FLOPS_PER_CORE = 1.0e11


@dataclass
class CPUConfig(HardwareConfig):
    # null: PEAK_FLOPS_PER_CORE x the cores available to this process (a typical machine, its size
    # measured); a number: the whole CPU's FLOP/s (mode=calibrate measures it).
    peak_flops: Optional[float] = bounded(None, min=0.0)


class CPU(Hardware):
    """The CPU. `hardware.logical_devices=N` splits it into N logical devices so MirroredStrategy
    runs N real replicas on a CPU-only machine.

    Example: `python -m scaleflow strategy=mirrored hardware=cpu hardware.logical_devices=2`
    """

    name = "cpu"
    Config = CPUConfig

    def figures(self, cfg) -> dict:
        # Logical devices share the CPU's cores: each replica gets its part of peak_flops.
        figures = {**super().figures(cfg), "devices_per_host": cfg.hardware.logical_devices, "shared_compute": True}
        if figures.get("peak_flops") is None:
            from scaleflow.hardware.threads import available_cores

            figures["peak_flops"] = PEAK_FLOPS_PER_CORE * available_cores()
        return figures

    def describe_figures(self, cfg) -> str:
        if cfg.hardware.get("peak_flops") is None:
            from scaleflow.hardware.threads import available_cores

            return (f"hardware=cpu config, peak_flops {PEAK_FLOPS_PER_CORE:.3g} FLOP/s per core x "
                    f"{available_cores()} cores")
        return super().describe_figures(cfg)

    def configure(self, cfg) -> dict:
        from scaleflow import registry

        if registry.get("strategy", cfg.strategy.name).backend == "jax":
            # TensorFlow only reads the input: the logical devices are XLA's host devices, which the
            # strategy's launcher set (XLA_FLAGS) before JAX started.
            import jax

            return {"devices": [str(d) for d in jax.devices()]}
        import tensorflow as tf

        n = cfg.hardware.logical_devices
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass
        if n > 1:
            try:
                tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
            except RuntimeError as e:  # TensorFlow was already initialised in this process
                current = len(tf.config.list_logical_devices("CPU"))
                if current != n:
                    raise ScaleflowError(f"hardware.logical_devices={n}: TensorFlow is already initialised "
                                         f"with {current} CPU devices ({e})") from None
        return {"devices": [d.name for d in tf.config.list_logical_devices("CPU")]}
