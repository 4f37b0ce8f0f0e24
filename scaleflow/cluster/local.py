"""LocalCluster: run N worker processes of one job on this machine, and end the job cleanly.

Guarantees (each wait has a deadline, so the job never hangs):
- every worker runs in its own process group (and dies with the launcher on Linux), and every group
  is killed before `run` returns, whatever happened: no process is left behind;
- startup watchdog: if some worker has not announced that all peers joined within `startup_timeout_s`,
  every worker is SIGKILLed (a TensorFlow worker blocked waiting for a peer ignores SIGTERM) and the
  error names the workers that never joined;
- the first worker that fails ends the job: the others get `peer_grace_s` to notice and exit on their
  own (so the chief can record the failure in run.json), then are killed; the error names the worker,
  how it ended and its last log lines;
- once one worker finished, the rest must finish within `finish_timeout_s`;
- SIGTERM or SIGINT sent to the launcher is forwarded to every worker (each finishes its step, keeps
  its checkpoint and exits 143/130; the chief records `interrupted`); the launcher waits for them up to
  `finish_timeout_s` and raises TrainingInterrupted. A second signal kills the workers at once.
- a worker killed by a step watchdog is not blamed for a hang it only waited on: the workers'
  heartbeats (cluster/heartbeat.py, in `log_dir`) name the one that stopped making progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Sequence

from scaleflow.cluster import heartbeat
from scaleflow.cluster.logs import LogStream
from scaleflow.errors import ScaleflowError


class WorkerFailed(ScaleflowError):
    """A worker failed, never joined, or did not finish: the message names it and shows its last lines."""

    def __init__(self, message: str, rank: int | None = None, hung: bool = False):
        super().__init__(message)
        self.rank = rank
        self.hung = hung  # the named worker stopped making progress (the others' errors are consequences)


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the launcher's finally still kills the groups
        pass


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class LocalCluster:
    """Start `len(commands)` workers and wait for all of them.

    Args:
        commands: one argv per worker (rank = position).
        envs: one environment per worker (complete, not a delta).
        cwd: working directory of every worker.
        startup_timeout_s: all workers must print `logs.READY` within this many seconds of the launch.
        finish_timeout_s: after the first worker exits 0, the others must follow within this many seconds.
        peer_grace_s: after a failure, how long the others may take to exit on their own before SIGKILL.
        netns: a `cluster.netns.NetworkNamespace` that every worker joins before it starts, or None.
        log_dir: where `worker-<rank>.out` (each worker's full console output) and `worker-<rank>.pid`
            are written, or None.
        out: where the rank-prefixed live output goes (None: quiet).

    Example:
        cluster = LocalCluster([[sys.executable, "-m", "scaleflow", ...]] * 2, [env0, env1])
        cluster.run()   # 0, or raises WorkerFailed naming the worker
    """

    def __init__(self, commands: Sequence[Sequence[str]], envs: Sequence[dict], cwd: str | None = None,
                 startup_timeout_s: float = 180.0, finish_timeout_s: float = 120.0, peer_grace_s: float = 15.0,
                 log_dir: str | None = None, out: IO[str] | None = sys.stdout, poll_s: float = 0.2,
                 netns=None):
        if len(commands) != len(envs):
            raise ValueError(f"commands and envs must have the same length, received: {len(commands)} "
                             f"and {len(envs)}")
        self.commands, self.envs, self.cwd = [list(c) for c in commands], list(envs), cwd
        self.startup_timeout_s, self.finish_timeout_s = startup_timeout_s, finish_timeout_s
        self.peer_grace_s, self.log_dir, self.out, self.poll_s = peer_grace_s, log_dir, out, poll_s
        self.netns = netns  # a cluster.netns.NetworkNamespace every worker joins, or None
        self.procs: list[subprocess.Popen] = []
        self.streams: list[LogStream] = []
        self.started_at: float | None = None
        self.stop_signal: int | None = None  # a SIGTERM/SIGINT received and forwarded to the workers
        self.started_wall = 0.0

    # ------------------------------------------------------------------------------------- signals
    def _forward(self, signum, frame) -> None:
        if self.stop_signal is not None:  # the second signal: no more waiting
            self.kill(grace_s=0)
            return
        self.stop_signal = signum
        for p in self.procs:
            if p.poll() is None:
                self._signal(p, signum)

    def _forwarding(self) -> dict:
        """Install the forwarding handlers (main thread only); returns the previous ones."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}

    # ------------------------------------------------------------------------------------- running
    def run(self) -> int:
        """Run to completion: 0 when every worker exited 0, else raise WorkerFailed."""
        previous = self._forwarding()
        try:
            self._start()
            return self._watch()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.kill()

    def _start(self) -> None:
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        self.started_at, self.started_wall = time.monotonic(), time.time()
        for rank, (command, env) in enumerate(zip(self.commands, self.envs)):
            proc = subprocess.Popen(command, env=env, cwd=self.cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=self._before_exec)
            self.procs.append(proc)
            if self.stop_signal is not None:  # a signal arrived while the workers were starting
                self._signal(proc, self.stop_signal)
            path = os.path.join(self.log_dir, f"worker-{rank}.out") if self.log_dir else None
            if self.log_dir:  # for operators (and tests) who need to signal one worker
                with open(os.path.join(self.log_dir, f"worker-{rank}.pid"), "w") as f:
                    f.write(f"{proc.pid}\n")
            self.streams.append(LogStream(rank, proc.stdout, self.out, path).start())

    def _before_exec(self) -> None:  # in the forked child
        if self.netns is not None:
            self.netns.enter()
        _die_with_parent()  # after setns: a change of credentials (a user namespace) would clear it

    def _watch(self) -> int:
        first_success = None
        while True:
            if self.stop_signal is not None:
                return self._wait_stopped()
            now = time.monotonic()
            codes = [p.poll() for p in self.procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                # Prefer a worker killed by a signal: the others' errors are usually its consequence.
                rank = min(failed, key=lambda r: (codes[r] > 0, r))
                hung = self._hung() if codes[rank] < 0 else None  # a stopped worker is still there now
                self._wait_others(self.peer_grace_s)
                if codes[rank] < 0 and hung is None:
                    hung = self._hung()
                raise self._failure(rank, codes[rank], hung)
            if all(c == 0 for c in codes):
                return 0
            if first_success is None and any(c == 0 for c in codes):
                first_success = now
            missing = [r for r, s in enumerate(self.streams) if s.ready_at is None and codes[r] is None]
            if missing and first_success is None and now - self.started_at > self.startup_timeout_s:
                self.kill(grace_s=0)
                names = ", ".join(f"worker-{r}" for r in missing)
                raise WorkerFailed(f"startup watchdog: {names} did not join the cluster within "
                                   f"{self.startup_timeout_s:.0f} s (every worker was killed)\n"
                                   + self._tails(missing), missing[0])
            if first_success is not None and now - first_success > self.finish_timeout_s:
                late = [r for r, c in enumerate(codes) if c is None]
                self.kill(grace_s=0)
                raise WorkerFailed(f"{', '.join(f'worker-{r}' for r in late)} did not finish within "
                                   f"{self.finish_timeout_s:.0f} s of the first worker (killed)\n"
                                   + self._tails(late), late[0])
            time.sleep(self.poll_s)

    def _wait_stopped(self) -> int:
        """After a forwarded signal: every worker stops at its next step and exits on its own."""
        from scaleflow.signals import TrainingInterrupted, resume_command

        signum = self.stop_signal
        self._wait_others(self.finish_timeout_s)
        late = [f"worker-{r}" for r, p in enumerate(self.procs) if p.poll() is None]
        self.kill(grace_s=0)
        where = f"sent to the launcher and forwarded to {len(self.procs)} workers"
        if late:
            where += f" ({', '.join(late)} did not stop within {self.finish_timeout_s:.0f} s and were killed)"
        raise TrainingInterrupted(signum, where, resume_command())

    def _wait_others(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(self.poll_s)

    def _hung(self) -> tuple[int, str] | None:
        """(rank, why) of the worker whose heartbeat says it stopped making progress first."""
        if not self.log_dir:
            return None
        return heartbeat.suspect(self.log_dir, range(len(self.procs)), started_after=self.started_wall)

    def _failure(self, rank: int, code: int, hung: tuple[int, str] | None = None) -> WorkerFailed:
        self.kill(grace_s=0)
        for s in self.streams:
            s.join(2.0)  # collect the last lines
        if hung is not None:
            culprit, why = hung
            return WorkerFailed(f"worker-{culprit} (pid {self.procs[culprit].pid}) {why}; the job was ended "
                                f"(worker-{rank} {_how(code)})\n"
                                + self._tails([culprit]), culprit, hung=True)
        others = [f"worker-{r} {_how(p.returncode)}" for r, p in enumerate(self.procs)
                  if r != rank and p.returncode not in (None, 0)]
        return WorkerFailed(f"worker-{rank} (pid {self.procs[rank].pid}) {_how(code)}; the job was ended"
                            + (f" ({'; '.join(others)})" if others else "") + "\n" + self._tails([rank]), rank)

    def _tails(self, ranks: Sequence[int], n: int = 15) -> str:
        parts = []
        for r in ranks:
            lines = self.streams[r].tail(n) if r < len(self.streams) else []
            parts.append(f"--- last lines of worker-{r} ---\n" + ("\n".join(lines) if lines else "(no output)"))
        return "\n".join(parts)

    # ------------------------------------------------------------------------------------- cleanup
    def kill(self, grace_s: float = 2.0) -> None:
        """End every worker's process group: SIGTERM, then SIGKILL after `grace_s` (blocked TensorFlow
        workers ignore SIGTERM). Safe to call more than once."""
        alive = [p for p in self.procs if p.poll() is None]
        if grace_s > 0:
            for p in alive:
                self._signal(p, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(p.poll() is None for p in alive):
                time.sleep(0.05)
        for p in self.procs:
            self._signal(p, signal.SIGKILL)  # the whole group, also when the leader already exited
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the worker's pid
        except (ProcessLookupError, PermissionError):
            pass

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]
