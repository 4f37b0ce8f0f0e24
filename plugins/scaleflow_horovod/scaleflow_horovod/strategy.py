"""`strategy=horovod`: synchronous data parallelism across processes with Horovod over Gloo."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

from scaleflow.config.schema import StrategyConfig, bounded
from scaleflow.errors import ScaleflowError
from scaleflow.strategies.base import (CLAIM_LAUNCHED, Claim, Distribution, Strategy, Topology,
                                       process_topology)
from scaleflow_horovod import install, launcher

log = logging.getLogger("scaleflow")


@dataclass
class HorovodConfig(StrategyConfig):
    network_interfaces: Optional[str] = None  # horovodrun --network-interfaces, e.g. "eth0" (multi-host)
    # Tensor fusion (HOROVOD_FUSION_THRESHOLD): tensors submitted together are all-reduced in one buffer
    # of at most this many bytes. null: Horovod's 128 MiB, which holds every gradient of models up to
    # 32M float32 parameters, so each step's grouped all-reduce is one collective; 0 turns fusion off.
    fusion_threshold_bytes: Optional[int] = bounded(None, min=0)
    # HOROVOD_CYCLE_TIME: how often Horovod's background thread looks for submitted tensors, in ms; a
    # step's all-reduce waits on average half a cycle before it starts. null: 0.1 ms for ranks on CPUs
    # (CPU_CYCLE_TIME_MS, measured below), Horovod's 1 ms for GPU ranks.
    cycle_time_ms: Optional[float] = bounded(None, min=0.01, max=1000.0)


# Horovod's own defaults (0.28), stated so run.json says what was used.
FUSION_THRESHOLD_DEFAULT = 128 * 1024 * 1024
CYCLE_TIME_MS_DEFAULT = 1.0
# CPU ranks: a 0.1 ms cycle. Measured on 2 cores, 2 ranks, bare Keras + Horovod (no scaleflow), one run
# each: MLP [128,128] batch 64 3.11 -> 1.53 ms/step; MLP [1024,1024] batch 256 25.6 -> 17.3 ms/step;
# and benchmarks/bench_scaling.py (scaleflow, interleaved repeats) in the README. 0.03 ms was not faster.
# Horovod's 1 ms suits GPU ranks, whose fused NCCL all-reduces are long next to it (not measured here).
CPU_CYCLE_TIME_MS = 0.1


def collective_settings(cfg, environ) -> dict:
    """{HOROVOD_FUSION_THRESHOLD: (value, why), HOROVOD_CYCLE_TIME: (value, why)}: the config key,
    else the rank's environment (e.g. horovodrun --fusion-threshold-mb), else the automatic choice
    (Horovod's defaults, except a 0.1 ms cycle for CPU ranks)."""
    horovods = "auto: Horovod's default"
    cpu_cycle = f"auto: {CPU_CYCLE_TIME_MS} ms for CPU ranks (short all-reduces: 1 ms is most of a small step)"
    automatic = {"HOROVOD_FUSION_THRESHOLD": (FUSION_THRESHOLD_DEFAULT, horovods),
                 "HOROVOD_CYCLE_TIME": (CPU_CYCLE_TIME_MS, cpu_cycle) if cfg.hardware.name == "cpu"
                 else (CYCLE_TIME_MS_DEFAULT, horovods)}
    out = {}
    for env, key in (("HOROVOD_FUSION_THRESHOLD", "fusion_threshold_bytes"), ("HOROVOD_CYCLE_TIME", "cycle_time_ms")):
        configured = cfg.strategy.get(key)
        if configured is not None:
            out[env] = (configured, f"strategy.{key}={configured}")
        elif environ.get(env):
            out[env] = (environ[env], f"{env}={environ[env]} in the environment")
        else:
            out[env] = automatic[env]
    return out


class Horovod(Strategy):
    """Horovod data parallelism: one process (rank) per worker, each reading its own shard, gradients
    averaged with Horovod's grouped all-reduce before every optimizer step.

    `python -m scaleflow strategy=horovod strategy.num_workers=2` starts horovodrun over Gloo on this
    machine; with `strategy.hosts=[a:2,b:2]` it starts ranks on those hosts over ssh; under an existing
    `horovodrun --gloo ... python -m scaleflow strategy=horovod` each process joins as its rank.
    Needs Horovod built for the installed TensorFlow (`make horovod`).

    Args (config keys):
        strategy.num_workers: number of ranks.
        strategy.hosts: `host:slots` entries; empty means localhost.
        strategy.timeout_s: bound on start-up, rendezvous and a stalled all-reduce.
        strategy.network_interfaces: NICs horovodrun may use (multi-host).

    Example:
        python -m scaleflow strategy=horovod strategy.num_workers=2 trainer.epochs=3
    """

    name = "horovod"
    Config = HorovodConfig
    conf = "pkg://scaleflow_horovod.conf"
    collective_timeline = True  # HOROVOD_TIMELINE (profile.timeline=true)

    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        return process_topology(cfg, figures, replicas_per_process=1)  # one replica per rank

    @classmethod
    def suits(cls, cfg, figures) -> bool:
        return super().suits(cfg, figures) and (figures.hosts > 1 or cfg.strategy.num_workers > 1)

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        if any(v in environment.environ for v in (launcher.JOINED_ENV, *launcher.MPI_ENV)):
            return Claim(CLAIM_LAUNCHED, "running under horovodrun/mpirun")
        return None

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str]:
        workers = _joined_size() or cfg.strategy.num_workers
        return workers, f"the number of Horovod ranks ({workers})"

    @classmethod
    def validate(cls, cfg) -> None:
        launcher.parse_hosts(cfg.strategy.hosts, cfg.strategy.num_workers)
        super().validate(cfg)

    @classmethod
    def local_processes(cls, cfg, environ) -> int:
        """Ranks on this host: horovodrun's HOROVOD_LOCAL_SIZE in a rank; before the launch, the ranks
        scaleflow will start here (strategy.num_workers without strategy.hosts), else 1."""
        if launcher.JOINED_ENV not in environ:
            return 1 if cfg.strategy.hosts else max(1, int(cfg.strategy.num_workers))
        size = str(environ.get("HOROVOD_LOCAL_SIZE", ""))
        return int(size) if size.isdigit() and int(size) > 0 else 1

    @classmethod
    def local_rank(cls, cfg, environ) -> int | None:
        local = str(environ.get("HOROVOD_LOCAL_RANK", "")) if launcher.JOINED_ENV in environ else ""
        return int(local) if local.isdigit() else None

    def launches(self, cfg) -> bool:
        # A missing or mismatched Horovod ends the job here, before TensorFlow is imported or any
        # process starts (config-only commands such as --cfg job still work without Horovod).
        install.check()
        if launcher.JOINED_ENV in os.environ:
            return False  # started by horovodrun: this process is one rank
        if any(v in os.environ for v in launcher.MPI_ENV):
            raise ScaleflowError("strategy=horovod: started by mpirun, but this Horovod is built with Gloo "
                                 "only (no MPI); launch with `horovodrun --gloo -np N -H host:N python -m "
                                 "scaleflow strategy=horovod ...` or let scaleflow launch it "
                                 "(strategy.num_workers=N)")
        return cfg.strategy.num_workers > 1 or bool(cfg.strategy.hosts)

    def launch(self, cfg, run_dir: str) -> int:
        started = time.time()
        status = launcher.run(cfg, run_dir)
        if status != 0:
            from scaleflow.cluster import heartbeat
            from scaleflow.cluster.local import WorkerFailed
            from scaleflow.manifest import mark_failed

            # horovodrun reports only the rank that exited first ("Process name: 0 Exit code: 1"), which
            # for a hung rank is a healthy one ended by the stall check: the heartbeats name the hung one.
            hung = heartbeat.suspect(os.path.join(run_dir, "workers"), range(cfg.strategy.num_workers),
                                     started_after=started) if not cfg.strategy.hosts else None
            error = (f"strategy=horovod: rank {hung[0]} {hung[1]}; the job was ended (horovodrun exit status "
                     f"{status})" if hung else f"strategy=horovod: a rank failed (horovodrun exit status {status})")
            mark_failed(run_dir, error, cause=hung is not None)
            if hung:
                raise WorkerFailed(f"{error}; see the log above and {run_dir}/run.json", hung[0], hung=True)
        return status

    def is_writer(self, cfg) -> bool:
        return os.environ.get(launcher.JOINED_ENV, "0") == "0"  # rank 0

    @classmethod
    def process_rank(cls, cfg, environ) -> int | None:
        rank = environ.get("HOROVOD_RANK", "")  # set by horovodrun on every rank it starts
        return int(rank) if rank.isdigit() else None

    def join(self, cfg) -> None:
        install.check()  # before TensorFlow loads: a clear message instead of a failed op library load

    def create(self, cfg) -> Distribution:
        from scaleflow_horovod.distribution import HorovodDistribution

        hvd = install.import_horovod()
        settings = collective_settings(cfg, os.environ)
        for env, (value, _) in settings.items():  # read by Horovod's background thread at init
            os.environ[env] = str(int(value) if env == "HOROVOD_FUSION_THRESHOLD" else value)
        hvd.init()
        expected = _joined_size() or 1
        if hvd.size() != expected:
            raise ScaleflowError(f"strategy=horovod: Horovod started {hvd.size()} rank(s), expected {expected}")
        if hvd.size() != cfg.strategy.num_workers and launcher.JOINED_ENV in os.environ:
            log.info("horovod: %d ranks from horovodrun (strategy.num_workers=%d is ignored when joining)",
                     hvd.size(), cfg.strategy.num_workers)
        return HorovodDistribution(hvd, collectives={
            "fusion_threshold_bytes": int(settings["HOROVOD_FUSION_THRESHOLD"][0]),
            "fusion_threshold_source": settings["HOROVOD_FUSION_THRESHOLD"][1],
            "cycle_time_ms": float(settings["HOROVOD_CYCLE_TIME"][0]),
            "cycle_time_source": settings["HOROVOD_CYCLE_TIME"][1],
            "packing": "all gradients in one grouped all-reduce per step (fused while they fit the threshold)"})


def _joined_size() -> int | None:
    size = os.environ.get("HOROVOD_SIZE") if launcher.JOINED_ENV in os.environ else None
    return int(size) if size and size.isdigit() else None
