"""One run at a time in a run dir: an exclusive lock taken before Hydra writes anything.

Two runs sharing a `hydra.run.dir` overwrite each other's run.json, `.hydra/` and checkpoints. So
`python -m scaleflow` locks the run dir before handing over to Hydra (which writes `.hydra/` and the
log before any task code runs), and a second run exits 2 at once, naming the holder.

The lock is `fcntl.flock` on `<run dir>/.scaleflow.lock`: the OS releases it when the holding process
ends in any way (SIGKILL included), so a crash never leaves a run dir locked. The file says who holds
it (pid, host, start time) for the second run's message; its content is informative only.

Processes of one multi-process job share the run dir. Workers started by scaleflow's own launchers
(local multi_worker, horovod) run under their launcher's lock and take none; processes started by a
cluster manager (TF_CONFIG, Slurm, horovodrun) each lock their own rank (`.scaleflow-rank<r>.lock`),
so the same job started twice is still refused.

Example:
    held = acquire("/runs/exp1")        # raises RunDirBusy (exit 2) naming the holder
    ...                                 # the lock lives as long as `held` (or the process)
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from typing import Any, Mapping

from scaleflow.errors import ConfigError

LOCK_NAME = ".scaleflow.lock"
_held: list["RunDirLock"] = []  # the locks this process holds for its whole life


class RunDirBusy(ConfigError):
    """Another live process holds the run dir's lock (exit 2, like any config error)."""

    def __init__(self, run_dir: str, holder: Mapping[str, Any], path: str):
        self.holder = dict(holder)
        who = f"pid {holder.get('pid', '(unknown)')}"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f", started {holder['started']}"
        super().__init__("hydra.run.dir", run_dir, "a run dir that no other run is using",
                         f"Another run ({who}) holds {path}: wait for it to end, or choose another hydra.run.dir")


class RunDirLock:
    """An exclusive, non-blocking lock on `run_dir`, held until `release()` or process exit.

    Args:
        run_dir: the run directory (created if missing).
        rank: which process of a multi-process job this is (0: the job itself).
    """

    def __init__(self, run_dir: str, rank: int = 0):
        self.run_dir = os.path.abspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_NAME if rank == 0 else f".scaleflow-rank{rank}.lock")
        self.fd: int | None = None

    def acquire(self) -> "RunDirLock":
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ConfigError("hydra.run.dir", self.run_dir, "a directory this user can create and write",
                              f"{e.strerror}: {e.filename}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirBusy(self.run_dir, holder, self.path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
                  .encode() + b"\n", 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def acquire(run_dir: str, rank: int = 0) -> RunDirLock:
    """Lock `run_dir` for the rest of this process's life (see the module docstring)."""
    lock = RunDirLock(run_dir, rank).acquire()
    _held.append(lock)
    return lock


def job_rank(cfg: Any, environ: Mapping[str, str] | None = None) -> int | None:
    """This process's rank in a multi-process job, from the environment its starter set: the
    configured strategy says (`Strategy.process_rank`), else Slurm's task id, else 0.

    None: a worker started by its strategy's own launcher, which already holds the run dir's lock."""
    env = os.environ if environ is None else environ
    from scaleflow import registry
    from scaleflow.strategies.base import UNDER_LAUNCHER

    rank = registry.get("strategy", cfg.strategy.name).process_rank(cfg, env)
    if rank is not None:
        return None if rank == UNDER_LAUNCHER else rank
    if env.get("SLURM_PROCID", "").isdigit() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    return 0


def quote_override(value: str) -> str:
    """A Hydra override value: quoted unless it is plainly safe."""
    import re

    if re.fullmatch(r"[\w/.\-:+@~]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
