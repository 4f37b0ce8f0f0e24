"""`strategy=auto`: the registered strategy that claims this machine most strongly.

Every registered strategy is asked for its `claim` (see strategies/base.py); the strongest wins, ties
by name. Nothing here knows any strategy by name, so a plugin's strategy is considered like a built-in.
"""

from __future__ import annotations

import logging
import sys

from scaleflow import registry
from scaleflow.errors import ScaleflowError
from scaleflow.strategies.base import Claim, Distribution, Environment, Parallelism, Strategy, Topology

log = logging.getLogger(__name__)


def claims(cfg, num_gpus: int | None = None) -> dict[str, Claim]:
    """name -> claim of every registered strategy that claims this config and environment."""
    environment = Environment(num_gpus=num_gpus)
    out = {}
    for name in registry.names("strategy"):
        claim = registry.get("strategy", name).claim(cfg, environment)
        if claim is not None:
            out[name] = claim
    return out


def resolve(cfg, num_gpus: int | None = None) -> tuple[str, str]:
    """(strategy name, reason). `num_gpus` is the count of visible GPUs when known."""
    found = claims(cfg, num_gpus)
    if not found:
        raise ScaleflowError("strategy=auto: no registered strategy claims this hardware; choose one with "
                             f"strategy=<name> ({', '.join(registry.names('strategy'))})")
    name = min(found, key=lambda n: (-found[n].strength, n))
    return name, found[name].reason


def visible_gpus() -> int | None:
    """GPUs TensorFlow sees, when it is already imported (never imports it: config-only paths)."""
    if "tensorflow" not in sys.modules:
        return None
    import tensorflow as tf

    return len(tf.config.list_logical_devices("GPU"))


def fallback_strategy(cfg) -> tuple[str, str]:
    """What to train with when the requested accelerator is absent (strategy.fallback=true):
    `resolve` as if hardware were the host CPU (logical_devices as configured) or its GPUs."""
    from omegaconf import OmegaConf

    num_gpus = visible_gpus()
    as_cpu = OmegaConf.create({"hardware": {"name": "gpu" if num_gpus else "cpu",
                                            "logical_devices": cfg.hardware.get("logical_devices", 1)},
                               "strategy": {"num_workers": 1}})
    return resolve(as_cpu, num_gpus)


class Auto(Strategy):
    """Chooses the strategy that claims this machine most strongly, and says which and why. With the
    built-ins: TPU -> tpu; a multi-worker TF_CONFIG -> multi_worker; under horovodrun -> horovod;
    strategy.num_workers > 1 -> multi_worker; several GPUs or logical CPU devices -> mirrored; else
    default.

    Example: `python -m scaleflow hardware.logical_devices=2`   (auto -> mirrored)
    """

    name = "auto"
    collective_timeline = True  # allowed: it may choose a strategy that writes one (e.g. under horovodrun)

    def __init__(self):
        self._chosen: Strategy | None = None

    @classmethod
    def resolved(cls, cfg) -> tuple[str, str]:
        return resolve(cfg)

    @classmethod
    def _resolved(cls, cfg) -> type[Strategy]:
        return registry.get("strategy", resolve(cfg)[0])

    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        return cls._resolved(cfg).topology(cfg, figures)

    @classmethod
    def parallelism(cls, cfg, figures) -> Parallelism:
        return cls._resolved(cfg).parallelism(cfg, figures)

    @classmethod
    def suits(cls, cfg, figures) -> bool:
        return False  # the planner compares real strategies

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        return None

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str] | None:
        return cls._resolved(cfg).batch_multiple(cfg)

    @classmethod
    def process_rank(cls, cfg, environ) -> int | None:
        return cls._resolved(cfg).process_rank(cfg, environ)

    def _strategy(self, cfg, num_gpus: int | None = None) -> Strategy:
        name, reason = resolve(cfg, num_gpus)
        if self._chosen is None or self._chosen.name != name:
            log.info("strategy=auto chose %s: %s", name, reason)
            self._chosen = registry.get("strategy", name)()
        return self._chosen

    def launches(self, cfg) -> bool:
        return self._strategy(cfg).launches(cfg)

    def launch(self, cfg, run_dir: str) -> int:
        return self._strategy(cfg).launch(cfg, run_dir)

    def is_writer(self, cfg) -> bool:
        return self._strategy(cfg).is_writer(cfg)

    def join(self, cfg) -> None:
        self._strategy(cfg).join(cfg)

    def create(self, cfg) -> Distribution:
        return self._strategy(cfg, visible_gpus()).create(cfg)
