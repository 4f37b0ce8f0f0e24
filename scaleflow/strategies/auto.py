"""Pick a strategy from the hardware and the environment."""

from __future__ import annotations

import json
import logging
import os
import sys

from scaleflow import registry
from scaleflow.strategies.base import Distribution, Strategy

log = logging.getLogger(__name__)

HOROVOD_ENV = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def resolve(cfg, num_gpus: int | None = None) -> tuple[str, str]:
    """(strategy name, reason). `num_gpus` is the count of visible GPUs when known."""
    available = registry.names("strategy")
    hw = cfg.hardware
    if hw.name == "tpu" and "tpu" in available:
        return "tpu", "hardware=tpu"
    tf_config = os.environ.get("TF_CONFIG")
    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
            workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        except ValueError:
            workers = 0
        if workers > 1 and "multi_worker" in available:
            return "multi_worker", f"TF_CONFIG describes a cluster of {workers} workers"
    if any(v in os.environ for v in HOROVOD_ENV) and "horovod" in available:
        return "horovod", "running under horovodrun/mpirun"
    if cfg.strategy.num_workers > 1 and "multi_worker" in available:
        return "multi_worker", f"strategy.num_workers={cfg.strategy.num_workers}"
    if hw.name == "cluster" and len(hw.get("hosts", [])) > 1 and "multi_worker" in available:
        return "multi_worker", f"hardware=cluster with {len(hw.hosts)} hosts"
    if hw.name == "cluster" and hw.get("devices_per_host", 1) > 1:
        return "mirrored", f"hardware=cluster: one host with {hw.devices_per_host} devices"
    if hw.name == "cpu" and hw.logical_devices > 1:
        return "mirrored", f"hardware.logical_devices={hw.logical_devices} CPU replicas"
    if num_gpus and num_gpus > 1:
        return "mirrored", f"{num_gpus} GPUs visible"
    return "default", "one device" + (" (1 GPU)" if num_gpus == 1 else "")


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


def implied_overrides(overrides: list[str]) -> list[str]:
    """Overrides a chosen strategy implies (its `implies` dict) for keys the user did not set.

    `strategy=tpu` implies `hardware=tpu`: Hydra forbids a group file from overriding another group
    (PITFALLS), so the choice is added to the command line before composing, where `--cfg job`,
    `.hydra/overrides.yaml` and run.json all show it. Sweeps over strategy imply nothing.
    """
    given = {o.lstrip("+~").partition("=")[0]: o.partition("=")[2] for o in overrides if "=" in o}
    name = given.get("strategy")
    if not name or "," in name or name not in registry.names("strategy"):
        return []
    implies = getattr(registry.get("strategy", name), "implies", None) or {}
    return [f"{key}={value}" for key, value in implies.items() if key not in given]


class Auto(Strategy):
    """Chooses: TPU -> tpu; a multi-worker TF_CONFIG -> multi_worker; under horovodrun -> horovod;
    several GPUs or logical CPU devices -> mirrored; else default. The log says which and why."""

    name = "auto"

    def _chosen(self, cfg) -> tuple[Strategy, str, str]:
        name, reason = resolve(cfg, visible_gpus())
        return registry.get("strategy", name)(), name, reason

    def launch(self, cfg, run_dir: str) -> int | None:
        name, reason = resolve(cfg)
        if name == self.name:
            return None
        return registry.get("strategy", name)().launch(cfg, run_dir)

    def create(self, cfg) -> Distribution:
        strategy, name, reason = self._chosen(cfg)
        log.info("strategy=auto chose %s: %s", name, reason)
        return strategy.create(cfg)
