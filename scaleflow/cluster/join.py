"""The worker side of a cluster: wait for every peer, and for every collective, but never forever.

MultiWorkerMirroredStrategy blocks in its first collective until every peer has started, and a peer
that never starts blocks it forever (it even ignores SIGTERM). `join` runs a tiny all-reduce as a
barrier under a watchdog process that SIGKILLs this one (the only signal a blocked worker cannot
ignore) when the barrier has not completed in time. This protects clusters started by anyone
(strategy.cluster=env or slurm), not only the local launcher, which has its own watchdog too.

During training the same watchdog bounds every collective: the worker ticks it at each step, and a
worker whose step has not completed within `strategy.timeout_s` (a hung peer) is ended. This replaces
`CommunicationOptions(timeout_seconds=...)`, which in TF 2.21 starts one thread per collective that
lives for the whole timeout: at ~400 collectives/s and 120 s that is ~48,000 threads per worker, and
workers died with "std::system_error: Resource temporarily unavailable" (measured).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from scaleflow.cluster.logs import READY

log = logging.getLogger("scaleflow")

_WATCHDOG = """
import os, select, signal, sys
pid, timeout, message, first = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
while True:
    ready, _, _ = select.select([sys.stdin], [], [], first or timeout)
    first = 0
    if not ready:  # no word from the worker in time
        try:  # a stopped worker (SIGSTOP) is the cause, not a victim waiting on a peer: say which
            stopped = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        except (OSError, IndexError):
            stopped = False
        print(": ".join(message.split(": ")[:3]) + ": this worker is stopped (SIGSTOP?); ending it (SIGKILL)" if stopped
              else message, file=sys.stderr, flush=True)
        os.kill(pid, signal.SIGKILL)
        break
    if not os.read(sys.stdin.fileno(), 4096):  # EOF: the worker is done with us (or died)
        break
"""


class StallWatchdog:
    """SIGKILLs this process when `tick()` has not been called for `timeout_s` seconds.

    The watchdog is a tiny separate process, not a thread: a TensorFlow worker blocked in a collective
    (waiting for a missing or hung peer) does not release the GIL, so no Python thread or signal
    handler of its own would ever run, and it ignores SIGTERM. The watchdog exits quietly on `stop()`
    or when this process dies (its stdin pipe closes).

    Args:
        timeout_s: the longest silence allowed.
        message: printed to stderr before the kill (say what was being waited for).
        first_timeout_s: a longer allowance before the first tick (e.g. tracing the first step), or None.

    Example:
        with StallWatchdog(120, "peers did not join"):
            strategy = tf.distribute.MultiWorkerMirroredStrategy(...)
            barrier(strategy)
    """

    def __init__(self, timeout_s: float, message: str, first_timeout_s: float | None = None):
        self.timeout_s, self.message, self.first_timeout_s = timeout_s, message, first_timeout_s
        self._proc: subprocess.Popen | None = None
        self._last_tick = 0.0

    def start(self) -> "StallWatchdog":
        if self._proc is None:
            self._proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.timeout_s),
                                           self.message, str(self.first_timeout_s or 0)],
                                          stdin=subprocess.PIPE, close_fds=True)
        return self

    def tick(self) -> None:
        """Progress: restart the countdown (cheap; writes at most twice a second)."""
        now = time.monotonic()
        if self._proc is not None and now - self._last_tick > 0.5:
            self._last_tick = now
            try:
                self._proc.stdin.write(b".")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def stop(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()  # EOF: the watchdog exits without doing anything
                self._proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self._proc.kill()
            self._proc = None

    def __enter__(self) -> "StallWatchdog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def barrier(strategy) -> float:
    """An all-reduce over every replica: returns when all workers have joined (the replica count)."""
    import tensorflow as tf

    value = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
    return float(value)


def join(make_strategy, timeout_s: float, num_workers: int, rank: int):
    """Create the strategy with `make_strategy()` and wait for every peer; announce `READY` on stdout."""
    started = time.monotonic()
    message = (f"scaleflow: error: startup watchdog: the {num_workers} workers of the cluster did not all join "
               f"within {timeout_s:.0f} s (strategy.timeout_s); ending worker {rank} (SIGKILL)")
    with StallWatchdog(timeout_s, message):
        strategy = make_strategy()
        replicas = barrier(strategy)
    log.info("worker %d/%d: all %d workers joined (%d replicas) in %.1f s", rank, num_workers, num_workers,
             int(replicas), time.monotonic() - started)
    print(f"{READY} (rank {rank})", flush=True)
    return strategy
