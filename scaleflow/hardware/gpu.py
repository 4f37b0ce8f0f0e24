"""NVIDIA GPUs on this host."""

from __future__ import annotations

from scaleflow.errors import ScaleflowError
from scaleflow.hardware.base import Hardware


class GPU(Hardware):
    """Visible GPUs (`hardware.num_gpus`, -1 for all), with memory growth on by default.

    Example: `python -m scaleflow hardware=gpu strategy=mirrored`
    """

    name = "gpu"

    def configure(self, cfg) -> dict:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            if cfg.strategy.get("fallback", False):
                return {"devices": ["/cpu:0"], "fallback": "no GPU visible; running on the CPU"}
            raise ScaleflowError("hardware=gpu but TensorFlow sees no GPU (is tensorflow[and-cuda] installed "
                                 "and CUDA_VISIBLE_DEVICES set?). Use hardware=cpu, or strategy.fallback=true "
                                 "to run on what is present.")
        n = cfg.hardware.num_gpus
        if n > len(gpus):
            raise ScaleflowError(f"hardware.num_gpus={n} but only {len(gpus)} GPU(s) are visible")
        chosen = gpus if n < 0 else gpus[:n]
        try:
            tf.config.set_visible_devices(chosen, "GPU")
            for gpu in chosen:
                tf.config.experimental.set_memory_growth(gpu, bool(cfg.hardware.memory_growth))
        except RuntimeError:
            pass  # already initialised (e.g. a second run in one process): keep what is set
        return {"devices": [d.name for d in tf.config.list_logical_devices("GPU")]}
