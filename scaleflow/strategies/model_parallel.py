"""Model parallelism: one model's variables split over M devices (a 1 x M mesh), on Keras' JAX backend."""

from __future__ import annotations

from scaleflow.errors import ConfigError
from scaleflow.strategies.base import Parallelism
from scaleflow.strategies.keras_jax import KerasJaxStrategy


class ModelParallel(KerasJaxStrategy):
    """Every device holds its part of the split variables (and of their Adam slots) and computes its
    part of each step; the global batch is not split. The layout: the model's default rules (e.g. the
    MLP's column/row pairs), overridden by `strategy.layout`. Runs in its own process with
    KERAS_BACKEND=jax (see strategies/keras_jax.py); the export is a TensorFlow SavedModel.

    Example:
        python -m scaleflow strategy=model_parallel hardware.logical_devices=4
        python -m scaleflow strategy=model_parallel hardware.logical_devices=2 \\
            'strategy.layout={dense_0/kernel:[null,model]}'
    """

    name = "model_parallel"

    @classmethod
    def split_candidates(cls, devices: int, global_batch: int, blocks: int) -> list[Parallelism]:
        return [Parallelism(model=devices)]

    @classmethod
    def mesh_shape(cls, cfg) -> tuple[int, int]:
        devices = cls.devices(cfg)
        mesh = cfg.strategy.mesh
        if mesh is None:
            if devices is None:
                raise ConfigError("strategy.mesh", None, "[1, M] when the devices are not known from the config "
                                  f"(hardware={cfg.hardware.name})", "e.g. strategy.mesh=[1,4]")
            return 1, devices
        mesh = list(mesh)
        if len(mesh) != 2 or mesh[0] != 1 or not isinstance(mesh[1], int) or mesh[1] < 1:
            raise ConfigError("strategy.mesh", mesh, "null or [1, M] with strategy=model_parallel",
                              "model_parallel splits the model only; strategy=hybrid takes [D, M]")
        cls._check_devices(cfg, 1, mesh[1], "strategy.mesh")
        return 1, mesh[1]
