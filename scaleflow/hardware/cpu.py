"""The host CPU, optionally split into logical devices."""

from __future__ import annotations

from scaleflow.errors import ScaleflowError
from scaleflow.hardware.base import Hardware


class CPU(Hardware):
    """The CPU. `hardware.logical_devices=N` splits it into N logical devices so MirroredStrategy
    runs N real replicas on a CPU-only machine.

    Example: `python -m scaleflow strategy=mirrored hardware=cpu hardware.logical_devices=2`
    """

    name = "cpu"

    def figures(self, cfg) -> dict:
        # Logical devices share the CPU's cores: each replica gets its part of peak_flops.
        return {**super().figures(cfg), "devices_per_host": cfg.hardware.logical_devices, "shared_compute": True}

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
