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
    hardware.pin_processes=true|false   # each process on its own block of cores, every thread included
    (null, the default: the strategy's choice, `Strategy.pins_processes`. Measured on 2 cores, 2
    processes, 3 interleaved rounds of benchmarks/bench_scaling.py --steps 100: multi_worker's
    default job 2.62-3.15 -> 1.98-2.15 ms/step pinned, its compute job 36.3-61.8 -> 23.7-36.5 ms: its
    collectives run on TensorFlow's own threads, which pinning keeps beside their process. Horovod's
    default job got slower pinned (1.77-4.23 -> 3.49-3.90 ms; bare Keras + Horovod 1.5-1.9 -> 4.0-6.3):
    its background thread, which runs every all-reduce, then waits for the core its own rank's
    compute holds; its compute job did not change (18.5-24.3 both ways).)

No TensorFlow import here except in `apply`.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("scaleflow")

ENV = {"intra_op": "TF_NUM_INTRAOP_THREADS", "inter_op": "TF_NUM_INTEROP_THREADS"}


_JOB_CPUS: set | None = None  # this process's cores before `pin` narrowed it to its share


def job_cpus() -> set:
    """The cores the job may run on here: this process's CPU affinity (which containers and taskset
    narrow), as it was before `hardware.pin_processes` narrowed it to this process's share. Helper
    processes a pinned process starts (the tf.data service's) take these back."""
    if _JOB_CPUS is not None:
        return set(_JOB_CPUS)
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def available_cores() -> int:
    """How many cores the job may run on here (`job_cpus`): the planner divides them among the
    host's processes itself."""
    return len(job_cpus()) or 1


def choose(cfg, local_processes: int, cores: int | None = None, environ=None, local_rank: int | None = None,
           pin_default: bool = False) -> dict:
    """The thread counts for one training process (0 means TensorFlow's default: every core), and the
    cores it is pinned to with `hardware.pin_processes=true`.

    Args:
        cfg: the config (`hardware.intra_op_threads`, `hardware.inter_op_threads`; null: automatic).
        local_processes: training processes of this job on this host (the strategy says).
        cores: cores available to the job on this host (default: this process's CPU affinity).
        local_rank: this process's place among them (the strategy says; None: not known).
        pin_default: whether the strategy pins its processes when `hardware.pin_processes` is null.
    Returns:
        {"intra_op": n, "inter_op": m, "cores": c, "local_processes": k, "source": {pool: why},
         "cpus": [core, ...] or None}.
    """
    environ = os.environ if environ is None else environ
    allowed = sorted(job_cpus()) if cores is None else list(range(cores))
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
    cpus = None
    configured = cfg.hardware.get("pin_processes")
    if (pin_default if configured is None else configured) and k > 1 and local_rank is not None:
        place = local_rank % k  # each place owns `share` consecutive cores
        cpus = allowed[place * share:(place + 1) * share] or allowed[-1:]
        source["cpus"] = ("hardware.pin_processes=true" if configured else "auto: the strategy pins its processes") + \
            f": place {place} of {k} on this host"
    return {**out, "cores": cores, "local_processes": k, "source": source, "cpus": cpus}


def pin(cpus: list[int]) -> list[int]:
    """Pin this process to `cpus`: every thread it has now (a thread's affinity is its own on
    Linux) and, through inheritance, every thread they start. Returns the thread ids pinned."""
    global _JOB_CPUS
    _JOB_CPUS = job_cpus()
    pinned = []
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, cpus)
            pinned.append(tid)
        except OSError:  # the thread ended meanwhile
            pass
    return pinned


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
    if choice.get("cpus"):
        pin(choice["cpus"])
    return result


def describe(choice: dict) -> str:
    def text(n):
        return "TensorFlow's default" if n == 0 else str(n)

    return (f"threads per process: intra-op {text(choice['intra_op'])}, inter-op {text(choice['inter_op'])} "
            f"({choice['cores']} cores, {choice['local_processes']} process(es) on this host)"
            + (f", pinned to core(s) {choice['cpus']}" if choice.get("cpus") else ""))
