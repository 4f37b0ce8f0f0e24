"""TensorFlow's thread pools per training process, sized to the cores this process really has.

TensorFlow sizes both of its pools (intra-op: the threads one op such as a matmul splits over;
inter-op: ops run side by side) to every core of the machine. Two workers on a 2-core machine then
run 4+ busy threads on 2 cores, and every step waits for preempted threads: on the compute-bound MLP
([1024, 1024], batch 256) a 2-worker MultiWorkerMirrored step took 82 ms with TensorFlow's defaults and
41 ms with one thread per pool per worker (same load, same run).

So each process gets its share: `cores // processes on this host` threads in each pool, where the
strategy says how many of its processes share this host (`Strategy.local_processes`). One process
per host keeps TensorFlow's own defaults (0: every core). Chosen before TensorFlow initialises (a
thread pool cannot be resized after), recorded in run.json (`tuning.threads`), overridable:

    hardware.intra_op_threads=N   # N threads per op; 0: TensorFlow's default (every core)
    hardware.inter_op_threads=N   # N ops side by side; 0: TensorFlow's default
    (null, the default: chosen as above; TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS in the
    environment, e.g. set by a parallel sweep's launcher, win over the automatic choice)

No TensorFlow import here except in `apply`.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("scaleflow")

ENV = {"intra_op": "TF_NUM_INTRAOP_THREADS", "inter_op": "TF_NUM_INTEROP_THREADS"}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose(cfg, local_processes: int, cores: int | None = None, environ=None) -> dict:
    """The thread counts for one training process (0 means TensorFlow's default: every core).

    Args:
        cfg: the config (`hardware.intra_op_threads`, `hardware.inter_op_threads`; null: automatic).
        local_processes: training processes of this job on this host (the strategy says).
        cores: cores available to the job on this host (default: this process's CPU affinity).
    Returns:
        {"intra_op": n, "inter_op": m, "cores": c, "local_processes": k, "source": {pool: why}}.
    """
    environ = os.environ if environ is None else environ
    cores = cores or available_cores()
    k = max(1, int(local_processes))
    share = max(1, cores // k) if k > 1 else 0
    out, source = {}, {}
    for pool, env in ENV.items():
        configured = cfg.hardware.get(f"{pool}_threads")
        if configured is not None:
            out[pool], source[pool] = int(configured), f"hardware.{pool}_threads={configured}"
        elif str(environ.get(env, "")).isdigit():
            out[pool], source[pool] = int(environ[env]), f"{env}={environ[env]} in the environment"
        elif k > 1:
            out[pool], source[pool] = share, f"auto: {cores} cores / {k} processes on this host"
        else:
            out[pool], source[pool] = 0, "auto: one process on this host keeps TensorFlow's default (every core)"
    return {**out, "cores": cores, "local_processes": k, "source": source}


def apply(choice: dict) -> dict:
    """Set TensorFlow's pools to `choice`, before TensorFlow initialises. Returns `choice` with
    `applied` (False, and why, when TensorFlow was already initialised with other sizes, e.g. a
    second run in one process: the pools then keep their sizes)."""
    import tensorflow as tf

    threading = tf.config.threading
    current = {"intra_op": threading.get_intra_op_parallelism_threads(),
               "inter_op": threading.get_inter_op_parallelism_threads()}
    setters = {"intra_op": threading.set_intra_op_parallelism_threads,
               "inter_op": threading.set_inter_op_parallelism_threads}
    result = {**choice, "applied": True}
    for pool, n in ((p, choice[p]) for p in ENV):
        if current[pool] == n:
            continue
        try:
            setters[pool](n)
        except RuntimeError:  # "cannot be modified after initialization"
            result["applied"] = False
            result["not_applied_reason"] = (f"TensorFlow was already initialised in this process with "
                                            f"{pool} threads {current[pool]}")
    if not result["applied"]:
        log.info("threads: %s; keeping them", result["not_applied_reason"])
    return result


def describe(choice: dict) -> str:
    def text(n):
        return "TensorFlow's default" if n == 0 else str(n)

    return (f"threads per process: intra-op {text(choice['intra_op'])}, inter-op {text(choice['inter_op'])} "
            f"({choice['cores']} cores, {choice['local_processes']} process(es) on this host)")
