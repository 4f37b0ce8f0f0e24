"""Streaming a worker's output to the console, prefixed by its rank, keeping its last lines.

Workers announce two moments on stdout with marker lines that the launcher watches for:
`READY` once every peer has joined (the startup watchdog stops then) and `FIRST_STEP` after the first
training step (start-up time in the benchmark).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import IO

READY = "scaleflow-cluster: all workers joined"
FIRST_STEP = "scaleflow-cluster: first step done"

_print_lock = threading.Lock()


class LogStream:
    """Reads one worker's merged stdout/stderr on a thread until it closes.

    Args:
        rank: the worker's rank, used in the prefix `[worker-<rank>] `.
        pipe: the worker's stdout (bytes).
        out: where prefixed lines go (the launcher's stdout); None to keep them quiet.
        path: a file that receives the worker's raw output too (its full console log), or None.
        keep: how many last lines to keep for error messages.
        ready: the marker line that sets `ready_at` (default: the cluster's READY).
        prefix: the prefix of live lines (default `[worker-<rank>] `).

    Example:
        stream = LogStream(1, proc.stdout, sys.stdout, "run/worker-1.out")
        stream.start(); ...; stream.tail()  # the last lines, for an error message
    """

    def __init__(self, rank: int, pipe: IO[bytes], out: IO[str] | None, path: str | None = None,
                 keep: int = 20, ready: str = READY, prefix: str | None = None):
        self.rank, self.pipe, self.out, self.path = rank, pipe, out, path
        self.ready, self.prefix = ready, prefix if prefix is not None else f"[worker-{rank}] "
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.ready_at: float | None = None
        self.first_step_at: float | None = None
        self._thread = threading.Thread(target=self._read, name=f"log-worker-{rank}", daemon=True)

    def start(self) -> "LogStream":
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def tail(self, n: int = 20) -> list[str]:
        return list(self.lines)[-n:]

    def _read(self) -> None:
        prefix = self.prefix
        sink = open(self.path, "a", encoding="utf-8") if self.path else None
        try:
            for raw in iter(self.pipe.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if self.ready in line and self.ready_at is None:
                    self.ready_at = time.monotonic()
                if FIRST_STEP in line and self.first_step_at is None:
                    self.first_step_at = time.monotonic()
                self.lines.append(line)
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
                if self.out is not None:
                    with _print_lock:
                        self.out.write(prefix + line + "\n")
                        self.out.flush()
        except (OSError, ValueError):
            pass  # the pipe closed under us: the process is gone
        finally:
            if sink:
                sink.close()
