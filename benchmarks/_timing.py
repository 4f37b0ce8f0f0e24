"""Shared by benchmarks: a Keras callback timing each epoch's training steps (validation excluded),
the same way scaleflow's Throughput callback does, so ratios compare like with like."""

from __future__ import annotations

import resource
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._t = None

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def _stop(self):
            if self._t is not None:
                self.seconds.append(time.perf_counter() - self._t)
                self._t = None

        def on_test_begin(self, logs=None):
            self._stop()

        def on_epoch_end(self, epoch, logs=None):
            self._stop()

    return EpochTimer()
