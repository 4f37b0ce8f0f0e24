"""Per-worker heartbeats: which worker of a stalled job stopped making progress.

When one worker hangs (SIGSTOP, a stuck input pipeline, a wedged host), every other worker blocks in
the next collective and looks exactly as stuck: their step watchdogs fire at the same moment, and
whichever dies first used to be blamed. Each worker therefore runs a small thread that rewrites
`heartbeat-<rank>` in the job's `workers/` dir every half second with the time and its last completed
step. A blocked collective releases the GIL, so a healthy worker keeps beating while it waits; a
stopped or wedged one falls silent. After a failure the launcher compares the files: the worker that
fell silent well before the others (or, failing that, the one behind in steps) is the one named.

The launching process sets `SCALEFLOW_HEARTBEAT_DIR` for the workers it starts; workers started by
anyone else (strategy.cluster=env|slurm) write no heartbeat.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Iterable

ENV = "SCALEFLOW_HEARTBEAT_DIR"
INTERVAL_S = 0.5
SILENT_AFTER_S = 2.0  # four beat intervals: well below any useful strategy.timeout_s


def path(directory: str, rank: int) -> str:
    return os.path.join(directory, f"heartbeat-{rank}")


class Heartbeat:
    """A daemon thread writing `<time> <step> <pid>` to `heartbeat-<rank>` every `interval_s`.

    Args:
        directory: where the file goes (the job's `workers/` dir).
        rank: this worker's rank.

    Example:
        beat = Heartbeat(run_dir + "/workers", rank).start()
        beat.step(n)   # after each training step
        beat.stop()
    """

    def __init__(self, directory: str, rank: int, interval_s: float = INTERVAL_S):
        self.file, self.interval_s = path(directory, rank), interval_s
        self.steps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        os.makedirs(directory, exist_ok=True)

    def start(self) -> "Heartbeat":
        if self._thread is None:
            self._write()
            self._thread = threading.Thread(target=self._run, name="scaleflow-heartbeat", daemon=True)
            self._thread.start()
        return self

    def step(self, steps: int | None = None) -> None:
        self.steps = self.steps + 1 if steps is None else steps

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.interval_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write()

    def _write(self) -> None:
        tmp = f"{self.file}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{time.time():.3f} {self.steps} {os.getpid()}\n")
            os.replace(tmp, self.file)
        except OSError:
            pass  # a full or vanished disk must not kill training; attribution is best effort


@dataclass(frozen=True)
class Beat:
    rank: int
    time: float
    steps: int
    pid: int


def read(directory: str, rank: int) -> Beat | None:
    try:
        with open(path(directory, rank)) as f:
            t, steps, pid = f.read().split()
        return Beat(rank, float(t), int(steps), int(pid))
    except (OSError, ValueError):
        return None


def process_state(pid: int) -> str | None:
    """'T' (stopped), 'S', 'R', 'D', 'Z'... from /proc; None when gone or not Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def suspect(directory: str, ranks: Iterable[int], started_after: float = 0.0) -> tuple[int, str] | None:
    """(rank, why) of the worker that stopped making progress first, or None when the heartbeats do
    not single one out. Beats older than `started_after` (a previous attempt's files) are ignored."""
    beats = [b for b in (read(directory, r) for r in ranks) if b is not None and b.time >= started_after]
    if len(beats) < 2:
        return None
    for b in beats:  # still alive but stopped (SIGSTOP, a debugger): certain
        if process_state(b.pid) in ("T", "t"):
            return b.rank, (f"is stopped (process state T, e.g. SIGSTOP) since {_ago(b.time)}, after "
                            f"{b.steps} steps; the other workers waited for it")
    latest = max(b.time for b in beats)
    silent = sorted((b for b in beats if latest - b.time > SILENT_AFTER_S), key=lambda b: b.time)
    if silent and len(silent) < len(beats):
        b = silent[0]
        return b.rank, (f"stopped making progress: its heartbeat stopped {latest - b.time:.1f} s before the "
                        f"others' (after {b.steps} steps) while they waited for it")
    fewest = min(b.steps for b in beats)
    behind = [b for b in beats if b.steps == fewest]
    if len(behind) == 1 and max(b.steps for b in beats) - fewest >= 1:
        b = behind[0]
        return b.rank, f"fell behind: {b.steps} steps completed, the others {max(x.steps for x in beats)}"
    return None


def _ago(t: float) -> str:
    return f"{max(0.0, time.time() - t):.1f} s ago"


def heartbeat_callback(rank: int):
    """A Keras callback running this worker's Heartbeat during training, or None when the launcher did
    not ask for one."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    import keras

    class HeartbeatCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.beat = Heartbeat(directory, rank)

        def on_train_begin(self, logs=None):
            self.beat.start()

        def on_train_batch_end(self, batch, logs=None):
            self.beat.step()

        def on_train_end(self, logs=None):
            self.beat.stop()

    return HeartbeatCallback()
