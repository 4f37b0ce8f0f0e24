"""The worker side of joining a cluster: wait for every peer, but never forever.

MultiWorkerMirroredStrategy blocks in its first collective until every peer has started, and a peer
that never starts blocks it forever (it even ignores SIGTERM). `join` runs a tiny all-reduce as a
barrier under a watchdog thread that ends this process (`os._exit`, which a blocked process cannot
ignore) when the barrier has not completed in time. This protects clusters started by anyone
(strategy.cluster=env or slurm), not only the local launcher, which has its own watchdog too.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from scaleflow.cluster.logs import READY

log = logging.getLogger("scaleflow")

JOIN_TIMEOUT_EXIT = 75  # exit status of a worker whose peers did not join in time


class JoinWatchdog:
    """Ends the process with JOIN_TIMEOUT_EXIT unless `done()` is called within `timeout_s`.

    Args:
        timeout_s: seconds to wait for every peer.
        what: what is being waited for, for the message.

    Example:
        with JoinWatchdog(120, "2 workers"):
            strategy = tf.distribute.MultiWorkerMirroredStrategy(...)
            barrier(strategy)
    """

    def __init__(self, timeout_s: float, what: str):
        self.timeout_s, self.what = timeout_s, what
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="join-watchdog", daemon=True)

    def __enter__(self) -> "JoinWatchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        message = (f"scaleflow: error: startup watchdog: {self.what} did not all join within "
                   f"{self.timeout_s:.0f} s (strategy.timeout_s); ending this worker")
        log.error(message)
        print(message, file=sys.stderr, flush=True)
        os._exit(JOIN_TIMEOUT_EXIT)


def barrier(strategy) -> float:
    """An all-reduce over every replica: returns when all workers have joined (the replica count)."""
    import tensorflow as tf

    value = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
    return float(value)


def join(make_strategy, timeout_s: float, num_workers: int, rank: int):
    """Create the strategy with `make_strategy()` and wait for every peer; announce `READY` on stdout."""
    started = time.monotonic()
    with JoinWatchdog(timeout_s, f"the {num_workers} workers of the cluster"):
        strategy = make_strategy()
        replicas = barrier(strategy)
    log.info("worker %d/%d: all %d workers joined (%d replicas) in %.1f s", rank, num_workers, num_workers,
             int(replicas), time.monotonic() - started)
    print(f"{READY} (rank {rank})", flush=True)
    return strategy
