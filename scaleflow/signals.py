"""SIGTERM and SIGINT end a training run cleanly: the current step finishes, the resume checkpoint
stays, run.json says `interrupted` with the command that resumes, and the process exits 143 (SIGTERM:
Slurm, Kubernetes, `timeout`) or 130 (SIGINT: Ctrl-C), without a traceback.

While `stop_requests()` is active, both signals only set a flag. Training checks it after every
training or validation step (`StopOnSignal`) and before the export; it then raises
`TrainingInterrupted`, which leaves Keras' `fit` at once: the epoch in progress is neither validated
nor checkpointed, so the checkpoint on disk stays the last completed epoch, which is what a rerun
resumes from. (Keras 3.15's BackupAndRestore restores epochs only: the metadata's `batch` is ignored
on restore, so a mid-epoch checkpoint would replay its steps; the partial epoch is redone instead.)
A second signal ends the process at once with the same status.

In a multi-process job every worker gets the signal (the launchers forward it) and stops at its next
step boundary; a worker that errors because a peer already stopped is reported as interrupted too.

Example:
    with stop_requests() as stop:
        model.fit(..., callbacks=[StopOnSignal(stop)])   # raises TrainingInterrupted on SIGTERM
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
import time
from typing import Callable, Iterator, Sequence

from scaleflow.errors import ScaleflowError

log = logging.getLogger("scaleflow")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The command that started the job (set by the CLI), for run.json's resume command in every process.
RESUME_ENV = "SCALEFLOW_RESUME_COMMAND"


class TrainingInterrupted(ScaleflowError):
    """A stop was requested by a signal; exit status 128 + signal number (143 SIGTERM, 130 SIGINT)."""

    kind = "interrupted"

    def __init__(self, signum: int, where: str, resume: str | None = None):
        self.signum, self.where, self.resume = signum, where, resume
        self.exit_code = 128 + signum
        message = f"{signal.Signals(signum).name} {where}: stopped, the last completed epoch's checkpoint is kept"
        super().__init__(message + (f". Resume with: {resume}" if resume else ""))


class StopRequest:
    """The flag the signal handlers set, and where training stood when it was checked."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.handler = None  # set by stop_requests while its handlers are installed

    def rearm(self) -> None:
        """Install the handlers again. TensorFlow's coordination service (started with a multi-worker
        cluster) installs its own C-level SIGTERM handler for preemption notices, which silently
        replaces Python's: SIGTERM then reached a worker and did nothing."""
        # Only a TensorFlow cluster (TF_CONFIG) runs the coordination service; elsewhere (e.g. Horovod
        # ranks) the handlers installed at the start stay as they were.
        if self.handler is not None and os.environ.get("TF_CONFIG"):
            for s in SIGNALS:
                signal.signal(s, self.handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self, where: str) -> None:
        """Raise TrainingInterrupted if a stop was requested (call at safe points only)."""
        if self.signum is not None:
            raise TrainingInterrupted(self.signum, where, resume_command())

    def interruption(self, error: BaseException) -> TrainingInterrupted | None:
        """The interruption `error` stands for: itself, or any failure after a stop request (e.g. a
        collective that lost a peer which stopped first)."""
        if isinstance(error, TrainingInterrupted):
            return error
        if self.signum is not None:
            return TrainingInterrupted(self.signum, f"received; the run then ended with {type(error).__name__}",
                                       resume_command())
        return None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Catch SIGTERM/SIGINT into a StopRequest for the duration (main thread only; elsewhere the
    default handlers stay and the flag is never set)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum, frame):
        if stop.signum is not None:  # the second signal: do not wait any longer
            print(f"scaleflow: second {signal.Signals(signum).name}: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)  # noqa: SLF001 - the checkpoint on disk is the last completed epoch
        stop.signum = signum
        log.warning("received %s: stopping after the current step (send it again to exit at once)",
                    signal.Signals(signum).name)

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    stop.handler = handle
    try:
        yield stop
    finally:
        stop.handler = None
        for s, handler in previous.items():
            signal.signal(s, handler)


def stop_on_signal(stop: StopRequest):
    """A Keras callback that raises TrainingInterrupted at the first step boundary after a signal."""
    import keras

    class StopOnSignal(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_train_begin(self, logs=None):
            stop.rearm()  # the cluster runtime starts late: its SIGTERM handler must not win
            stop.check("before training started")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            stop.rearm()
            stop.check(f"at the start of epoch {epoch + 1}")

        def on_train_batch_end(self, batch, logs=None):
            stop.check(f"in epoch {self.epoch + 1} after step {batch + 1}")

        def on_test_batch_end(self, batch, logs=None):
            stop.check(f"in epoch {self.epoch + 1} during validation")

    return StopOnSignal()


class ForwardSignals:
    """In a launching process: SIGTERM/SIGINT are passed on to the job's processes, which stop
    cleanly themselves; the launcher then reports the interruption (`signum` says which).

    Args:
        targets: returns the pids to signal (called when the signal arrives).

    Example:
        with ForwardSignals(lambda: [worker.pid]) as forwarded:
            status = wait_for_the_job()
        if forwarded.signum is not None:
            raise TrainingInterrupted(forwarded.signum, "forwarded", resume_command())
    """

    def __init__(self, targets: Callable[[], Sequence[int]]):
        self.targets = targets
        self.signum: int | None = None
        self.at: float | None = None  # time.monotonic() of the first signal
        self.count = 0  # processes the first signal reached
        self.hurry = False  # a second signal: stop waiting and end the job
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            self.hurry = True
            return
        self.signum, self.at = signum, time.monotonic()
        for pid in self.targets():
            try:
                os.kill(pid, signum)
                self.count += 1
            except (ProcessLookupError, PermissionError):
                pass
        log.warning("received %s: forwarded to %d process(es); waiting for them to stop (send it again to "
                    "end them at once)", signal.Signals(signum).name, self.count)

    def __enter__(self) -> "ForwardSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def remember_command(overrides: Sequence[str]) -> None:
    """Record the command line that resumes this job (inherited by every worker it starts); of
    several `hydra.run.dir=` overrides only the last (the pinned, absolute one) is kept."""
    run_dirs = [o for o in overrides if o.startswith("hydra.run.dir=")]
    kept = [o for o in overrides if not o.startswith("hydra.run.dir=")] + run_dirs[-1:]
    os.environ[RESUME_ENV] = shlex.join(["python", "-m", "scaleflow", *kept])


def resume_command() -> str | None:
    return os.environ.get(RESUME_ENV) or None
