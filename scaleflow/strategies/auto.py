"""Pick a strategy from the hardware and the environment."""

from __future__ import annotations

import json
import logging
import os

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
    if hw.name == "cpu" and hw.logical_devices > 1:
        return "mirrored", f"hardware.logical_devices={hw.logical_devices} CPU replicas"
    if num_gpus and num_gpus > 1:
        return "mirrored", f"{num_gpus} GPUs visible"
    return "default", "one device" + (" (1 GPU)" if num_gpus == 1 else "")


class Auto(Strategy):
    """Chooses: TPU -> tpu; a multi-worker TF_CONFIG -> multi_worker; under horovodrun -> horovod;
    several GPUs or logical CPU devices -> mirrored; else default. The log says which and why."""

    name = "auto"

    def _chosen(self, cfg) -> tuple[Strategy, str, str]:
        num_gpus = None
        if "tensorflow" in __import__("sys").modules:
            import tensorflow as tf

            num_gpus = len(tf.config.list_logical_devices("GPU"))
        name, reason = resolve(cfg, num_gpus)
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
