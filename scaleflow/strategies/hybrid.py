"""Hybrid parallelism: D data-parallel replicas, each split over M devices (a D x M mesh), on JAX."""

from __future__ import annotations

from scaleflow.errors import ConfigError
from scaleflow.strategies.base import Parallelism
from scaleflow.strategies.keras_jax import KerasJaxStrategy


class Hybrid(KerasJaxStrategy):
    """`strategy.mesh=[D, M]`: the global batch split over the D devices of the "batch" (data) axis, every
    split variable over the M devices of the "model" axis (same layout rules as model_parallel);
    D x M must equal the devices. Runs in its own process with KERAS_BACKEND=jax.

    Example:
        python -m scaleflow strategy=hybrid strategy.mesh=[2,2] hardware.logical_devices=4
    """

    name = "hybrid"

    @classmethod
    def split_candidates(cls, devices: int, global_batch: int, blocks: int) -> list[Parallelism]:
        """Every D x M with both axes > 1, M a power of two, D dividing the global batch."""
        out, m = [], 2
        while m < devices:
            if devices % m == 0 and global_batch % (devices // m) == 0:
                out.append(Parallelism(data=devices // m, model=m))
            m *= 2
        return out

    @classmethod
    def mesh_shape(cls, cfg) -> tuple[int, int]:
        mesh = cfg.strategy.mesh
        devices = cls.devices(cfg)
        example = f"[2, {devices // 2}]" if devices and devices % 2 == 0 else "[2, 2]"
        if mesh is None:
            raise ConfigError("strategy.mesh", None, "[D, M]: D data-parallel replicas of M devices each",
                              f"e.g. strategy.mesh={example}")
        mesh = list(mesh)
        if len(mesh) != 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in mesh):
            raise ConfigError("strategy.mesh", mesh, "[D, M], two integers >= 1", f"e.g. strategy.mesh={example}")
        cls._check_devices(cfg, mesh[0], mesh[1], "strategy.mesh")
        return mesh[0], mesh[1]
