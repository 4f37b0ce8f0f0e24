"""Measures training throughput per epoch, excluding validation time."""

from __future__ import annotations

import time
from typing import ClassVar

from scaleflow.training.callback import Callback


def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class Throughput(Callback):
    """Registered callback: examples/s and steps/s of each epoch's training steps.

    `summary()` averages the epochs after the first (the first one pays tracing/compilation).
    """

    name: ClassVar[str] = "throughput"

    @classmethod
    def create(cls, cfg, run_dir: str, distribution, global_batch: int, steps_per_epoch: int):
        base = _keras_callback_base()

        class _Throughput(base):
            def __init__(self):
                super().__init__()
                self.epochs: list[dict] = []
                self._start = None

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()
                self._epoch = epoch

            def _stop(self):
                if self._start is not None:
                    seconds = time.perf_counter() - self._start
                    self._start = None
                    self.epochs.append({"epoch": self._epoch + 1, "seconds": seconds,
                                        "steps_per_sec": steps_per_epoch / seconds,
                                        "examples_per_sec": steps_per_epoch * global_batch / seconds})

            def on_test_begin(self, logs=None):
                self._stop()

            def on_epoch_end(self, epoch, logs=None):
                self._stop()

            def summary(self) -> dict:
                steady = self.epochs[1:] or self.epochs
                if not steady:
                    return {"examples_per_sec": None, "steps_per_sec": None, "epochs_measured": 0}
                seconds = sum(e["seconds"] for e in steady)
                steps = steps_per_epoch * len(steady)
                return {"examples_per_sec": steps * global_batch / seconds, "steps_per_sec": steps / seconds,
                        "epochs_measured": len(steady), "step_time_s": seconds / steps,
                        "per_epoch": self.epochs}

        return _Throughput()
