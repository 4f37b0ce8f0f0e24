"""The processes of a tf.data service for one run (`data.service=local|<host:port>`, scaleflow/data/service.py).

`local`: `LocalService` starts a dispatcher and N workers as separate processes (each
`python -m scaleflow.cluster.data_service_server`, its own process group, ended with the run):
- free ports on 127.0.0.1; the dispatcher is given the fixed worker list static sharding needs;
- readiness: every process prints READY within `data.service_timeout_s`, then a probe job reads one
  round from every worker (a process that died or never came is named with its last log lines);
- shutdown on success, failure or SIGTERM (the `with` block ends): SIGTERM to each group, SIGKILL
  after a grace; a process also ends when its stdin closes or its parent dies (PR_SET_PDEATHSIG), so
  a launcher killed with SIGKILL leaves nothing behind;
- a service process that dies during training ends the run (`watch`), never a silent hang.
The servers of TF 2.21 bind every interface (`[::]:port`): when this process's network namespace
has more than a loopback device, the service runs in a private network namespace (cluster/netns.py)
and a relay in this namespace listens on 127.0.0.1 only (cluster/data_service_relay.py).

`<host:port>`: a TCP connection within `data.service_timeout_s` (else a clear error), then the same
probe job, which also measures the worker count and checks that static sharding is possible.

TensorFlow is imported only by `probe` (in the training process, which imports it anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

from scaleflow.cluster.data_service_server import READY
from scaleflow.cluster.logs import LogStream
from scaleflow.cluster.relay import READY as RELAY_READY
from scaleflow.cluster.ports import free_ports
from scaleflow.errors import ScaleflowError
from scaleflow.hardware.threads import job_cpus

log = logging.getLogger("scaleflow")
GRACE_S = 2.0
FAILURE_GRACE_S = 10.0  # after a service process died: time for TensorFlow to fail the step itself


class ServiceFailed(ScaleflowError):
    """The tf.data service could not start, be reached, or died: the message says which process/address."""


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: stdin EOF and `stop` still end it
        pass


class LocalService:
    """A dispatcher and `num_workers` workers on 127.0.0.1, as separate processes.

    Args:
        num_workers: service workers.
        log_dir: where `dispatcher.out`, `worker-<i>.out` and `pids` are written (None: nowhere).
        timeout_s: every process must be READY within this many seconds.
        netns: a cluster.netns.NetworkNamespace the service processes join (then a relay process
            listens on 127.0.0.1 here and forwards into it; it is closed with the service), or None.

    Example:
        with LocalService(2, run_dir + "/data_service", 60) as service:
            service.address   # '127.0.0.1:41234'
    """

    def __init__(self, num_workers: int, log_dir: str | None, timeout_s: float, netns=None):
        self.num_workers, self.log_dir, self.timeout_s, self.netns = num_workers, log_dir, timeout_s, netns
        self.procs: list[subprocess.Popen] = []
        self.streams: list[LogStream] = []
        self.names: list[str] = []
        self.ports: list[int] = []
        self.stopping = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def worker_addresses(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports[1:]]

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.procs)

    def start(self) -> "LocalService":
        self.ports = free_ports(1 + self.num_workers)
        module = [sys.executable, "-m", "scaleflow.cluster.data_service_server"]
        commands = [module + ["dispatcher", "--port", str(self.ports[0]), "--workers", ",".join(self.worker_addresses)]]
        commands += [module + ["worker", "--port", str(p), "--dispatcher", self.address] for p in self.ports[1:]]
        names = ["dispatcher"] + [f"worker-{i}" for i in range(self.num_workers)]
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "CUDA_VISIBLE_DEVICES": ""}
        if self.netns is not None:  # first the way in (127.0.0.1 here), so the ports are held from now on
            self._spawn("relay", [sys.executable, "-m", "scaleflow.cluster.relay", str(self.netns.pid),
                                  "1" if self.netns.user_ns else "0", ",".join(map(str, self.ports))],
                        env, RELAY_READY, inside=False)
        for name, command in zip(names, commands):
            self._spawn(name, command, env, READY, inside=True)
        if self.log_dir:  # for operators (and tests) checking that nothing is left behind
            with open(os.path.join(self.log_dir, "pids"), "w") as f:
                f.write("".join(f"{n} {p.pid}\n" for n, p in zip(self.names, self.procs)))
        self._wait_ready()
        return self

    def _spawn(self, name: str, command: list[str], env: dict, ready: str, inside: bool) -> None:
        cpus = job_cpus()  # a pinned trainer's service processes still get every core of the job

        def before_exec() -> None:  # in the forked child
            os.sched_setaffinity(0, cpus)
            if inside and self.netns is not None:
                self.netns.enter()
            _die_with_parent()  # after setns: a change of credentials (a user namespace) would clear it

        proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=before_exec)
        self.procs.append(proc)
        self.names.append(name)
        path = os.path.join(self.log_dir, f"{name}.out") if self.log_dir else None
        self.streams.append(LogStream(len(self.streams), proc.stdout, None, path, ready=ready,
                                      prefix=f"[data-service {name}] ").start())

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                i = dead[0]
                self.stop()
                raise ServiceFailed(f"data.service=local: the {self.names[i]} process exited with status "
                                    f"{self.procs[i].returncode} while starting\n" + self.tails([i]))
            waiting = [i for i, s in enumerate(self.streams) if s.ready_at is None]
            if not waiting:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceFailed(f"data.service=local: {', '.join(self.names[i] for i in waiting)} did not start "
                                    f"within {self.timeout_s:g} s (data.service_timeout_s); every service process "
                                    "was ended\n" + self.tails(waiting))
            time.sleep(0.1)

    def dead(self) -> list[tuple[str, int]]:
        """(name, exit status) of the service processes that have exited."""
        return [(n, p.returncode) for n, p in zip(self.names, self.procs) if p.poll() is not None]

    def tails(self, indices, n: int = 10) -> str:
        out = []
        for i in indices:
            lines = self.streams[i].tail(n) if i < len(self.streams) else []
            out.append(f"--- last lines of data-service {self.names[i]} ---\n" + ("\n".join(lines) or "(no output)"))
        return "\n".join(out)

    def stop(self, grace_s: float = GRACE_S) -> None:
        """End every service process group (SIGTERM, then SIGKILL after `grace_s`). Idempotent."""
        self.stopping = True
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    p.stdin.close()
                _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.05)
        for p in self.procs:
            _signal(p, signal.SIGKILL)  # the whole group, also when the leader already exited
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for s in self.streams:
            s.join(1.0)
        if self.netns is not None:
            self.netns.close()

    def __enter__(self) -> "LocalService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_reachable(host: str, port: int, timeout_s: float) -> None:
    """Return once a TCP connection to host:port succeeds; ServiceFailed after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServiceFailed(f"data.service={host}:{port}: no tf.data service dispatcher reachable there within "
                                f"{timeout_s:g} s (data.service_timeout_s): {last}. Start one (with a fixed worker list) "
                                "or use data.service=local")
        try:
            with socket.create_connection((host, port), timeout=min(2.0, left)):
                return
        except OSError as e:
            last = e
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def probe(address: str, timeout_s: float, job_name: str) -> int:
    """Read one round of a tiny job through the service, with the same static sharding (HINT) and
    strict round-robin reads the pipelines use, and return how many workers serve it. A dispatcher
    that does not answer in time, or cannot shard statically, is a ServiceFailed naming it."""
    import tensorflow as tf

    service = tf.data.experimental.service
    result: dict = {}

    def run() -> None:
        try:
            # shard(N, k) then pairs: worker k's first element is [k, k + N], whichever worker answers.
            ds = tf.data.Dataset.range(0, 2**62).shard(tf.data.experimental.SHARD_HINT,
                                                     tf.data.experimental.SHARD_HINT).batch(2)
            ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
            ds = ds.apply(service.distribute(service.ShardingPolicy.HINT, f"grpc://{address}", job_name=job_name,
                                             consumer_index=0, num_consumers=1))
            pair = next(iter(ds)).numpy()
            result["workers"] = int(pair[1] - pair[0])
        except Exception as e:  # noqa: BLE001 - reported below, with the address
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            result["error"] = text.split("}} ", 1)[-1].split(" [Op:")[0]  # without TensorFlow's node names

    thread = threading.Thread(target=run, name="data-service-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():  # the daemon thread stays blocked in TensorFlow; the run ends anyway
        raise ServiceFailed(f"data.service: the dispatcher at {address} did not serve a probe job within {timeout_s:g} s "
                            "(data.service_timeout_s): is it a tf.data service dispatcher, started with a fixed worker "
                            "list (DispatcherConfig.worker_addresses), with every listed worker running?")
    if "error" in result:
        hint = ""
        if any(m in result["error"] for m in ("worker_addresses", "workers list", "Failed to shard")):
            hint = " (static sharding needs a dispatcher started with DispatcherConfig(worker_addresses=[...]))"
        raise ServiceFailed(f"data.service: the tf.data service at {address} failed a probe job: {result['error']}{hint}")
    return result["workers"]


def watch(service: LocalService, on_failure: Callable[[str], None] | None, stop: threading.Event) -> None:
    """A service process that dies ends the run: the pipeline's round-robin reads would wait for it
    forever. TensorFlow usually fails the step on its own first; if it has not after FAILURE_GRACE_S,
    the failure is recorded and this process exits (status 1)."""
    while not stop.wait(0.5):
        dead = service.dead()
        if not dead or service.stopping:
            continue
        name, code = dead[0]
        i = service.names.index(name)
        message = (f"data.service=local: the {name} process (pid {service.pids[i]}) exited with status {code} "
                   "during the run; the run cannot continue without it\n" + service.tails([i]))
        log.error("%s", message)
        if stop.wait(FAILURE_GRACE_S):
            return  # the run ended on its own (and recorded why)
        if on_failure is not None:
            with contextlib.suppress(Exception):
                on_failure(message)
        service.stop(grace_s=0)
        print(f"scaleflow: error: {message.splitlines()[0]}", file=sys.stderr, flush=True)
        os._exit(1)
