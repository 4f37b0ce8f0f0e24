"""Start a Horovod job with horovodrun over Gloo and wait for it.

The launching process never imports TensorFlow: it writes the resolved config to
`<run dir>/.horovod-config.yaml` (mode 0600: the command line, visible to every user in `ps`, only
names the file; on several hosts the run dir must be on a shared filesystem at the same path), starts
`python -m scaleflow_horovod.worker` on every rank and returns horovodrun's exit status. On one
machine the whole job runs in a private network namespace (cluster/netns.py) and horovodrun's own
servers bind 127.0.0.1. Horovod's own timeouts bound every wait:
`--start-timeout` (ranks that never start), `--gloo-timeout-seconds` (rendezvous and collectives) and
the stall check (a rank stuck while the others wait in an all-reduce), all set from
`strategy.timeout_s`; when one rank fails, horovodrun ends the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from omegaconf import OmegaConf

from scaleflow.errors import ConfigError
from scaleflow_horovod.horovodrun import LOOPBACK_ENV

log = logging.getLogger("scaleflow")

JOINED_ENV = "HOROVOD_RANK"  # set by horovodrun (Gloo) on every rank it starts
MPI_ENV = ("OMPI_COMM_WORLD_RANK", "PMI_RANK")
# horovodrun starts each local rank in a session of its own, and a killed horovodrun does not
# reliably end them (they were seen training on for seconds); ranks watch this process instead.
LAUNCHER_PID_ENV = "SCALEFLOW_HOROVOD_LAUNCHER_PID"


def parse_hosts(hosts, num_workers: int) -> list[tuple[str, int]]:
    """[(host, slots)] from strategy.hosts ("host" or "host:slots"), or localhost:num_workers."""
    if not hosts:
        return [("localhost", num_workers)]
    parsed = []
    for entry in hosts:
        host, _, slots = str(entry).partition(":")
        if not host or (slots and not slots.isdigit()) or slots == "0":
            raise ConfigError("strategy.hosts", list(hosts), "a list of host or host:slots entries",
                              "Example: strategy.hosts=[node1:2,node2:2]")
        parsed.append((host, int(slots) if slots else 1))
    total = sum(slots for _, slots in parsed)
    if total < num_workers:
        raise ConfigError("strategy.num_workers", num_workers,
                          f"at most the {total} slots of strategy.hosts={list(hosts)}")
    return parsed


def horovodrun_command(cfg, run_dir: str) -> list[str]:
    """The horovodrun command line that runs this job on strategy.num_workers ranks."""
    s = cfg.strategy
    hosts = parse_hosts(s.hosts, s.num_workers)
    timeout = max(1, int(s.timeout_s))
    # horovodrun through a wrapper that binds its servers to 127.0.0.1 for a one-machine job.
    launcher = [sys.executable, "-m", "scaleflow_horovod.horovodrun"]
    command = [*launcher, "--gloo", "-np", str(s.num_workers), "-H", ",".join(f"{h}:{n}" for h, n in hosts),
               "--start-timeout", str(timeout), "--gloo-timeout-seconds", str(timeout),
               "--stall-check-warning-time-seconds", str(max(1, min(60, timeout // 2))),
               "--stall-check-shutdown-time-seconds", str(timeout)]
    if s.get("network_interfaces"):
        command += ["--network-interfaces", str(s.network_interfaces)]
    return command + [sys.executable, "-m", "scaleflow_horovod.worker", "--run-dir", os.path.abspath(run_dir),
                      "--config", config_file(run_dir)]


CONFIG_FILE = ".horovod-config.yaml"


def write_config(cfg, run_dir: str) -> str:
    """The resolved config, for the ranks, in a file only this user can read: on the command line it
    would be visible to every user of the machine in `ps` (and it may carry paths, hosts, hparams)."""
    path = config_file(run_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)  # created afresh, so the mode below always holds
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def config_file(run_dir: str) -> str:
    return os.path.join(os.path.abspath(run_dir), CONFIG_FILE)


def worker_env(cfg, run_dir: str) -> dict:
    """The ranks' environment. (Each rank sizes TensorFlow's thread pools itself from
    HOROVOD_LOCAL_SIZE: scaleflow/hardware/threads.py; OMP_NUM_THREADS shares the cores out for
    libraries outside TensorFlow.)"""
    from scaleflow.cluster import heartbeat

    env = dict(os.environ)
    env[heartbeat.ENV] = os.path.join(os.path.abspath(run_dir), "workers")  # names a rank that hangs
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # "host:pid": a rank on another host cannot see this process, and must not take it for dead.
    env[LAUNCHER_PID_ENV] = f"{socket.gethostname()}:{os.getpid()}"
    from scaleflow.profiling.timeline import timeline_env

    env.update(timeline_env(cfg, run_dir))  # profile.timeline=true: Horovod's own timeline of collectives
    if not cfg.strategy.hosts:
        threads = str(max(1, (os.cpu_count() or 1) // cfg.strategy.num_workers))
        env.setdefault("OMP_NUM_THREADS", threads)
    return env


def run(cfg, run_dir: str) -> int:
    """Run the job under horovodrun; returns its exit status (0: every rank succeeded)."""
    if shutil.which("ssh") is None and any(h not in ("localhost", "127.0.0.1") for h, _ in
                                           parse_hosts(cfg.strategy.hosts, cfg.strategy.num_workers)):
        log.warning("strategy.hosts names remote hosts but ssh is not installed; horovodrun needs it")
    command = horovodrun_command(cfg, run_dir)
    write_config(cfg, run_dir)
    log.info("horovod: %d ranks on %s, run dir %s", cfg.strategy.num_workers,
             command[command.index("-H") + 1], run_dir)
    env = worker_env(cfg, run_dir)
    ns = None
    if local_only(cfg):
        from scaleflow.cluster.netns import private_network

        env[LOOPBACK_ENV] = "1"
        ns = private_network(cfg, "horovodrun's rendezvous server and the ranks' Gloo connections",
                             "horovodrun's rendezvous server binds 127.0.0.1 and the ranks' Gloo connections the "
                             "loopback interface: no other host can reach them, but every user of this machine can")
    else:
        log.info("horovod on several hosts: horovodrun's rendezvous server (HTTP, a random port on the "
                 "launching host) and every rank's Gloo connections listen on the hosts' network interfaces; "
                 "restrict them to a private network with strategy.network_interfaces=<nic> and a firewall")
    # A session of its own, so that the whole job (horovodrun and its ranks) can be ended together;
    # on one machine the job runs inside the private network namespace.
    process = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=ns.enter if ns else None)
    from scaleflow.signals import ForwardSignals, TrainingInterrupted, resume_command

    try:
        # horovodrun's own SIGTERM handling SIGSTOPs and kills the ranks: signals go to the ranks instead.
        with ForwardSignals(lambda: local_ranks(process.pid)) as forwarded:
            try:
                status = _wait(process, forwarded, stop_timeout_s=cfg.strategy.timeout_s + 30)
            except BaseException:
                _end(process)
                raise
    finally:
        if ns is not None:
            ns.close()
        with contextlib.suppress(OSError):
            os.unlink(config_file(run_dir))
    if forwarded.signum is not None:
        from scaleflow.manifest import mark_interrupted

        interrupted = TrainingInterrupted(forwarded.signum, f"sent to the launcher and forwarded to "
                                          f"{forwarded.count} local rank(s)", resume_command())
        mark_interrupted(run_dir, str(interrupted), interrupted.resume)  # if rank 0 could not
        raise interrupted
    return status


def local_only(cfg) -> bool:
    return all(h in ("localhost", "127.0.0.1") for h, _ in parse_hosts(cfg.strategy.hosts, cfg.strategy.num_workers))


def local_ranks(horovodrun_pid: int) -> list[int]:
    """Pids of this job's ranks on this host (descendants of horovodrun running the worker module)."""
    try:
        import psutil  # a dependency of horovod

        children = psutil.Process(horovodrun_pid).children(recursive=True)
        # The module as an argument of its own: the `sh -c "... python -m scaleflow_horovod.worker ..."`
        # wrapping a rank must not be signalled (a shell dies of SIGTERM; horovodrun then ends the job).
        return [c.pid for c in children if "scaleflow_horovod.worker" in c.cmdline()]
    except Exception:  # noqa: BLE001 - gone already, or no psutil: nothing to forward to
        return []


def _wait(process: subprocess.Popen, forwarded, stop_timeout_s: float) -> int:
    """Wait for horovodrun; after a forwarded signal, at most stop_timeout_s (a second signal: not at all)."""
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if forwarded.hurry or (forwarded.at is not None and time.monotonic() - forwarded.at > stop_timeout_s):
            for pid in local_ranks(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _end(process, grace_s=2.0)
            return process.returncode


def _end(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the job, then SIGKILL what is left after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
