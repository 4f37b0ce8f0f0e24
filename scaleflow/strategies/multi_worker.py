"""Synchronous data parallelism across worker processes: MultiWorkerMirroredStrategy.

Where the workers come from (`strategy.cluster`):
  local  this command starts `strategy.num_workers` workers on 127.0.0.1 itself (each is
         `python -m scaleflow <the same overrides>` with its own TF_CONFIG, in the same run dir)
  env    this process is one worker of a cluster described by the TF_CONFIG in its environment
  slurm  this process is one Slurm task (`srun`); TensorFlow's SlurmClusterResolver finds the peers

Worker 0 is the chief: it alone writes run.json, the export and the final TensorBoard summary; every
worker has its own backup dir (BackupAndRestore) and TensorBoard/profile dir (see training/train.py).
No wait is unbounded: a worker whose peers do not join, or whose training step does not complete,
within `strategy.timeout_s` ends itself (a watchdog process SIGKILLs it); a dead peer is detected by
TensorFlow's heartbeats (~11 s); the local launcher ends the whole job when any worker fails or never
joins, and leaves no process behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

from dataclasses import dataclass
from typing import Optional

from scaleflow.config.schema import StrategyConfig, bounded
from scaleflow.errors import ConfigError
from scaleflow.strategies.base import (CLAIM_CLUSTER, CLAIM_HOSTS, CLAIM_PROCESSES, UNDER_LAUNCHER, Claim, Distribution,
                                       Strategy, TFDistribution, Topology, process_topology)

log = logging.getLogger("scaleflow")

# Set by the local launcher in each worker it starts: "train here, do not launch again".
WORKER_ENV = "SCALEFLOW_CLUSTER_WORKER"
IMPORT_ALLOWANCE_S = 60.0  # launcher's startup watchdog: strategy.timeout_s plus time to import TF
TRACING_ALLOWANCE_S = 60.0  # the step watchdog's extra allowance for tracing the first step


@dataclass
class MultiWorkerConfig(StrategyConfig):
    # Gradient packing (tf.distribute.experimental.CommunicationOptions.bytes_per_pack): TensorFlow
    # concatenates the gradients into packs of about this many bytes and all-reduces each pack as one
    # collective. null: 0, one pack for all gradients (one collective per step: on CPU each costs ~1 ms
    # of gRPC round trips whatever its size); N > 0: packs of ~N bytes, which can start while earlier
    # layers still compute their gradients. (CommunicationOptions.implementation is not offered: on
    # CPU, TensorFlow 2.21 runs its ring all-reduce for AUTO and RING alike; NCCL needs GPUs.)
    bytes_per_pack: Optional[int] = bounded(None, min=0)


class MultiWorkerDistribution(TFDistribution):
    def __init__(self, *args, timeout_s: float = 120.0, bytes_per_pack: tuple[int, str] = (0, ""), **kwargs):
        super().__init__(*args, max_steps_per_execution=MultiWorker.steps_cap(), **kwargs)
        self.timeout_s = timeout_s
        self.bytes_per_pack = bytes_per_pack

    def collective_seconds(self, model, repeats: int = 20) -> float:
        """Median time of all-reducing this model's gradients between the workers as a training step
        does (same strategy, same packing), measured in every worker at once (profile=summary)."""
        import statistics
        import time

        import tensorflow as tf

        shapes = [v.shape for v in model.trainable_variables]

        @tf.function
        def all_reduce():
            def replica():
                # Made in the replica (a function argument has no device, which the strategy's reduce
                # refuses); collective ops are stateful, so Grappler never folds them.
                reduced = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, [tf.ones(s) for s in shapes])
                return tf.reduce_sum(reduced[-1])

            return self.strategy.run(replica)

        def once():
            return float(self.strategy.experimental_local_results(all_reduce())[0])

        once()
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            once()
            times.append(time.perf_counter() - began)
        return statistics.median(times)

    def tuning(self) -> dict:
        value, why = self.bytes_per_pack
        return {"bytes_per_pack": value, "bytes_per_pack_source": why,
                "packing": "all gradients in one all-reduce per step" if value == 0
                else f"gradients in packs of ~{value} bytes, one all-reduce each"}

    def active(self):
        """Keras 3.15 needs two fixes to fit under this strategy (compat/keras_mwms.py): on for the
        lifetime of the run, undone after."""
        from scaleflow.compat import keras_mwms

        return keras_mwms.patched()

    def callbacks(self) -> list:
        import keras

        from scaleflow.cluster.join import StallWatchdog
        from scaleflow.cluster.logs import FIRST_STEP

        timeout_s, rank, announce = self.timeout_s, self.worker_index, bool(os.environ.get(WORKER_ENV))

        class CollectiveTimeout(keras.callbacks.Callback):
            """Ends this worker when no step completes within strategy.timeout_s (a peer hung in a
            collective); also tells the local launcher when the first step is done."""

            def __init__(self):
                super().__init__()
                self.watchdog = StallWatchdog(timeout_s, f"scaleflow: error: worker {rank}: no training step "
                                              f"completed within {timeout_s:.0f} s (strategy.timeout_s): a peer "
                                              "is stuck or gone; ending this worker (SIGKILL)",
                                              first_timeout_s=timeout_s + TRACING_ALLOWANCE_S)
                self.first = True

            def on_train_begin(self, logs=None):
                self.watchdog.start()

            def on_train_batch_end(self, batch, logs=None):
                self.watchdog.tick()
                if self.first and announce:
                    print(FIRST_STEP, flush=True)
                self.first = False

            def on_test_batch_end(self, batch, logs=None):
                self.watchdog.tick()

            def on_epoch_end(self, epoch, logs=None):
                self.watchdog.tick()

            def on_train_end(self, logs=None):
                self.watchdog.stop()

        from scaleflow.cluster.heartbeat import heartbeat_callback

        beat = heartbeat_callback(rank)  # lets the launcher name a worker that hangs
        return [CollectiveTimeout()] + ([beat] if beat else [])


def _same_host(environ) -> tuple[list[int], int] | None:
    """From TF_CONFIG: the ranks of the members on this task's host (in rank order) and this task's
    rank; None without a TF_CONFIG, or with a malformed one (reported where the cluster is joined)."""
    from scaleflow.cluster import tf_config

    if not environ.get(tf_config.ENV):
        return None
    try:
        info = tf_config.read(environ)
    except Exception:  # noqa: BLE001 - reported where the cluster is joined
        return None
    host = info.addresses[info.rank].rsplit(":", 1)[0]
    return [r for r, a in enumerate(info.addresses) if a.rsplit(":", 1)[0] == host], info.rank


class MultiWorker(Strategy):
    """MultiWorkerMirroredStrategy over `strategy.num_workers` processes.

    Example (one machine, 2 local workers):
        python -m scaleflow strategy=multi_worker strategy.num_workers=2
    Example (a cluster: run on every host, each with its own TF_CONFIG):
        python -m scaleflow strategy=multi_worker strategy.cluster=env hydra.run.dir=/shared/run1
    """

    name = "multi_worker"
    Config = MultiWorkerConfig
    # Keras 3.15 `fit` with steps_per_execution > 1 under this strategy fails in its while loop
    # ("You must feed a value for placeholder tensor 'while/.../Placeholder'"); compat/keras_mwms.py
    # fixes it on the Keras versions it was measured on. Elsewhere: one step per call.
    max_steps_per_execution = None

    @staticmethod
    def steps_cap() -> int | None:
        """None where the Keras fix for several steps per call applies, else 1. Imports Keras: only
        in a training process."""
        from scaleflow.compat import keras_mwms

        return None if keras_mwms.needed() else 1

    def __init__(self):
        self._connected: Distribution | None = None  # joined before the hardware step, used by `create`

    # ------------------------------------------------------------------ questions from the config
    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        return process_topology(cfg, figures, replicas_per_process=figures.devices_per_host)

    @classmethod
    def suits(cls, cfg, figures) -> bool:
        return super().suits(cfg, figures) and (figures.hosts > 1 or cfg.strategy.num_workers > 1)

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        workers = _tf_config_workers(environment.environ)
        if workers > 1:
            return Claim(CLAIM_CLUSTER, f"TF_CONFIG describes a cluster of {workers} workers")
        if cfg.strategy.num_workers > 1:
            return Claim(CLAIM_PROCESSES, f"strategy.num_workers={cfg.strategy.num_workers}")
        hosts = cfg.hardware.get("hosts") or []
        if cfg.hardware.name == "cluster" and len(hosts) > 1:
            return Claim(CLAIM_HOSTS, f"hardware=cluster with {len(hosts)} hosts")
        return None

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str] | None:
        s = cfg.strategy
        if s.cluster == "local":
            return s.num_workers, f"strategy.num_workers={s.num_workers} workers"
        return None  # the cluster's size is known once it is joined

    @classmethod
    def validate(cls, cfg) -> None:
        if cfg.strategy.cluster == "env":
            from scaleflow.cluster.tf_config import read

            read()  # a missing or malformed TF_CONFIG is a config error, found before TensorFlow loads
        super().validate(cfg)

    @classmethod
    def local_processes(cls, cfg, environ) -> int:
        """Workers on this host: from TF_CONFIG (members with this task's host), or Slurm's tasks on
        this node; without either, the workers the local launcher will start here
        (strategy.num_workers with strategy.cluster=local), else 1."""
        if cfg.strategy.cluster == "slurm":
            return _slurm_tasks_on_this_node(environ)
        from scaleflow.cluster import tf_config

        if not environ.get(tf_config.ENV):
            return max(1, int(cfg.strategy.num_workers)) if cfg.strategy.cluster == "local" else 1
        here = _same_host(environ)
        return max(1, len(here[0])) if here else 1

    @classmethod
    def pins_processes(cls, cfg) -> bool:
        # gRPC collectives run on TensorFlow's threads in each worker: pinned beside their worker
        # they stop preempting the other worker's compute (measured in hardware/threads.py).
        return True

    @classmethod
    def local_rank(cls, cfg, environ) -> int | None:
        """Among the TF_CONFIG members with this task's host, this task's position (the local
        launcher's workers all share 127.0.0.1); Slurm's SLURM_LOCALID."""
        if cfg.strategy.cluster == "slurm":
            local = str(environ.get("SLURM_LOCALID", ""))
            return int(local) if local.isdigit() else None
        here = _same_host(environ)
        return here[0].index(here[1]) if here else None

    # ------------------------------------------------------------------------------ the launcher
    @staticmethod
    def _in_cluster(cfg) -> bool:
        """This process is one worker: started by the local launcher, or given a cluster."""
        from scaleflow.cluster.tf_config import ENV

        return bool(os.environ.get(WORKER_ENV) or cfg.strategy.cluster != "local" or os.environ.get(ENV))

    def launches(self, cfg) -> bool:
        return not self._in_cluster(cfg) and cfg.strategy.num_workers > 1

    def launch(self, cfg, run_dir: str) -> int:
        """Start the local workers and wait for them."""
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
        return launch_local(cfg, run_dir, overrides)

    def is_writer(self, cfg) -> bool:
        if not self._in_cluster(cfg):
            return True
        if cfg.strategy.cluster == "slurm":
            return os.environ.get("SLURM_PROCID", "0") == "0"
        from scaleflow.cluster import tf_config

        return tf_config.read().rank == 0 if os.environ.get(tf_config.ENV) else True

    @classmethod
    def process_rank(cls, cfg, environ) -> int | None:
        if environ.get(WORKER_ENV):
            return UNDER_LAUNCHER  # started by the local launcher, which holds the run dir's lock
        from scaleflow.cluster import tf_config

        if not environ.get(tf_config.ENV):
            return None
        try:
            return tf_config.read(environ).rank
        except ConfigError:
            return 0  # validation reports a malformed TF_CONFIG where it matters

    # ------------------------------------------------------------------------------- the worker
    def join(self, cfg) -> None:
        """A worker connects now: TensorFlow requires collective ops to be configured before its
        context is initialised ("Collective ops must be configured at program startup"), which the
        hardware step does next."""
        from scaleflow.cluster.tf_config import ENV

        if self._in_cluster(cfg):
            if cfg.strategy.cluster == "local" and not os.environ.get(WORKER_ENV):
                log.info("%s is set: joining that cluster instead of starting local workers", ENV)
            self._connected = self._connect(cfg)

    def create(self, cfg) -> Distribution:
        distribution, self._connected = self._connected or self._connect(cfg), None
        return distribution

    def _connect(self, cfg) -> Distribution:
        """Create the strategy and wait for every peer (bounded by strategy.timeout_s)."""
        from scaleflow import tf_logging

        tf = tf_logging.import_tensorflow(cfg.trainer.verbose)  # a worker's first TF import: quiet it too

        from scaleflow.cluster import join, tf_config

        logging.getLogger("tensorflow").setLevel(logging.WARNING)  # one INFO line per collective otherwise
        s = cfg.strategy
        if s.cluster == "local" and not os.environ.get(tf_config.ENV):
            resolver, num_workers, rank = None, 1, 0  # one local worker: no cluster to join
        else:
            resolver = tf_config.cluster_resolver(s.cluster, cfg.hardware.name)
            spec = resolver.cluster_spec().as_dict()
            num_workers = sum(len(v) for k, v in spec.items() if k in ("chief", "worker"))
            rank = tf_config.read().rank if s.cluster != "slurm" else int(resolver.task_id)
            if s.cluster != "local" and not os.environ.get(WORKER_ENV):
                log.info("strategy.cluster=%s: this worker's TensorFlow gRPC server listens on every interface at "
                         "%s's port (TF 2.21 binds 0.0.0.0); allow only the cluster's hosts to reach it "
                         "(private network, firewall)", s.cluster, tf_config_address(spec, rank))
            if s.cluster != "local" and s.num_workers not in (1, num_workers):
                log.warning("strategy.num_workers=%d is ignored: the cluster has %d workers", s.num_workers,
                            num_workers)

        configured = s.get("bytes_per_pack")
        packing = (int(configured), f"strategy.bytes_per_pack={configured}") if configured is not None else \
            (0, "auto: one pack, so one all-reduce per step carries every gradient")

        def make():
            # No CommunicationOptions(timeout_seconds): in TF 2.21 it leaks one thread per collective for
            # the whole timeout (see cluster/join.py); the step watchdog bounds collectives instead.
            options = tf.distribute.experimental.CommunicationOptions(bytes_per_pack=packing[0])
            return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)

        strategy = join.join(make, s.timeout_s, num_workers, rank)
        return MultiWorkerDistribution(self.name, strategy, num_workers=num_workers, worker_index=rank,
                                       timeout_s=s.timeout_s, bytes_per_pack=packing)


def tf_config_address(spec: dict, rank: int) -> str:
    members = list(spec.get("chief", [])) + list(spec.get("worker", []))
    return members[rank] if rank < len(members) else "?"


def _slurm_tasks_on_this_node(environ) -> int:
    """Slurm's task count on this node: SLURM_NTASKS_PER_NODE, else this node's entry of
    SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE ("2(x3),1": 2 tasks on each of 3 nodes, then 1); 1 when unknown."""
    per_node = str(environ.get("SLURM_NTASKS_PER_NODE", ""))
    if per_node.isdigit():
        return max(1, int(per_node))
    counts = []
    layout = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "")
    for part in str(layout).split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m:
            counts += [int(m.group(1))] * int(m.group(2) or 1)
    node = str(environ.get("SLURM_NODEID", "0"))
    index = int(node) if node.isdigit() else 0
    return max(1, counts[index]) if index < len(counts) else 1


def _tf_config_workers(environ) -> int:
    """Members of the cluster TF_CONFIG describes (0 when it is absent or unreadable)."""
    try:
        cluster = json.loads(environ.get("TF_CONFIG") or "{}").get("cluster", {})
        return len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    except (ValueError, AttributeError):
        return 0


def _quote(value: str) -> str:
    """A Hydra override value: quoted unless it is plainly safe."""
    if re.fullmatch(r"[\w/.\-:+@~]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def worker_command(overrides: list[str], run_dir: str, rank: int) -> list[str]:
    """`python -m scaleflow <overrides>` for worker `rank`: same run dir; Hydra's .hydra/ is left to the
    launcher and each worker logs to its own `worker-<rank>.log`."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.run.dir", "hydra.output_subdir",
                                                                      "hydra.job.name"))]
    return [sys.executable, "-m", "scaleflow", *kept, f"hydra.run.dir={_quote(os.path.abspath(run_dir))}",
            "hydra.output_subdir=null", f"hydra.job.name=worker-{rank}"]


def launch_local(cfg, run_dir: str, overrides: list[str]) -> int:
    """Start `strategy.num_workers` workers on 127.0.0.1 and wait for all; raises WorkerFailed."""
    from scaleflow.cluster import LocalCluster, WorkerFailed, free_ports, heartbeat, netns
    from scaleflow.cluster.tf_config import ENV, local_tf_config
    from scaleflow.manifest import mark_failed, mark_interrupted
    from scaleflow.signals import TrainingInterrupted

    n = cfg.strategy.num_workers
    os.makedirs(run_dir, exist_ok=True)
    ports = free_ports(n)
    commands, envs = [], []
    for rank in range(n):
        commands.append(worker_command(overrides, run_dir, rank))
        envs.append({**os.environ, ENV: local_tf_config(ports, rank), WORKER_ENV: str(rank),
                     heartbeat.ENV: os.path.join(os.path.abspath(run_dir), "workers"),
                     "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
    timeout = cfg.strategy.timeout_s
    ports_text = ", ".join(map(str, ports))
    ns = netns.private_network(cfg, f"the workers' TensorFlow gRPC servers (ports {ports_text})")
    log.info("strategy=multi_worker: starting %d local workers on 127.0.0.1 ports %s in %s", n, ports_text, run_dir)
    cluster = LocalCluster(commands, envs, cwd=os.getcwd(), startup_timeout_s=timeout + IMPORT_ALLOWANCE_S,
                           finish_timeout_s=max(60.0, timeout), peer_grace_s=min(15.0, timeout),
                           log_dir=os.path.join(run_dir, "workers"), netns=ns)
    try:
        status = cluster.run()
    except WorkerFailed as e:  # the chief may have been killed before it could say so
        mark_failed(run_dir, str(e).splitlines()[0], cause=e.hung)
        raise
    except TrainingInterrupted as e:  # likewise, when it did not stop in time after the signal
        mark_interrupted(run_dir, str(e), e.resume)
        raise
    finally:
        if ns is not None:
            ns.close()
    log.info("strategy=multi_worker: all %d workers finished", n)
    return status


__all__ = ["MultiWorker", "MultiWorkerConfig", "MultiWorkerDistribution", "WORKER_ENV", "launch_local"]
