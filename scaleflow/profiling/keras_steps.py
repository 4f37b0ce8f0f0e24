"""The one Keras internal the profilers rely on, version-guarded.

Keras 3.15's TensorFlow train function (`TensorFlowTrainer._make_function` in
keras/src/backend/tensorflow/trainer.py) takes two paths:

- a `tf.data.Iterator` / `DistributedIterator` (what `fit` passes): `steps_per_execution` steps inside
  one `tf.while_loop`. Fast, but the profiler cannot see a step in it (measured: loop iterations
  carry iter_num > 0, so no step marker can work), and the time spent waiting for input is hidden.
- any other Python iterator: `for step, data in zip(range(steps_per_execution), iterator):
  one_step_on_data(data)`: one compiled step (`strategy.run` + reduction) per item drawn.

`StepDraws` is such a Python iterator over fit's own iterator: it sees each step begin (when the item
is drawn) and the previous one end, without touching Keras' code. The window and the summary replace
`model.train_function` with a wrapper for the calls they need and put Keras' function back after.
`tests/test_profiling.py` checks the contract (steps run = items drawn) on the installed Keras.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("scaleflow")

# (major, minor) of Keras releases whose train function was read and tested to behave as above.
MEASURED = {(3, 15)}
_warned = False


def keras_version() -> tuple[int, int]:
    import keras

    major, minor = (int(p) for p in keras.__version__.split(".")[:2])
    return major, minor


def supported(what: str) -> bool:
    """True on a measured Keras version; else warns once that `what` is off (training is unchanged)."""
    global _warned
    if keras_version() in MEASURED:
        return True
    if not _warned:
        import keras

        log.warning("%s is off: Keras %s is not a version its train-function contract was checked on (%s); "
                    "see scaleflow/profiling/keras_steps.py", what, keras.__version__,
                    ", ".join(f"{a}.{b}" for a, b in sorted(MEASURED)))
        _warned = True
    return False


class StepDraws:
    """A Python iterator over fit's iterator: Keras runs one compiled step per item drawn.

    `on_step(index, drawn_at)` is called as each step begins (before its input is fetched);
    `on_step_end(index)` as it ends (when the next item is asked for, or at `close`). `wait_s` sums the
    time spent fetching input (time blocked in the input pipeline).
    """

    def __init__(self, iterator, first_step: int, on_step=None, on_step_end=None):
        self._iterator = iterator
        self.next_step = first_step
        self.drawn = 0
        self.wait_s = 0.0
        self.waits: list[float] = []
        self._on_step, self._on_step_end = on_step, on_step_end
        self._open = None

    def __iter__(self):
        return self

    def __next__(self):
        self.close()
        step = self.next_step
        if self._on_step is not None:
            self._on_step(step)
        self._open = step
        started = time.perf_counter()
        try:
            data = next(self._iterator)
        except (StopIteration, OutOfRangeErrors()):
            self.close()
            raise StopIteration from None
        waited = time.perf_counter() - started
        self.wait_s += waited
        self.waits.append(waited)
        self.next_step += 1
        self.drawn += 1
        return data

    def close(self):
        if self._open is not None:
            step, self._open = self._open, None
            if self._on_step_end is not None:
                self._on_step_end(step)


def OutOfRangeErrors():  # noqa: N802 - used as an exception class tuple
    import tensorflow as tf

    return tf.errors.OutOfRangeError


def run_drawn(train_function, draws: StepDraws):
    """Run Keras' train function over `draws` (one compiled step per item); StopIteration when the
    input ended before any step (as Keras' own iterator path does)."""
    try:
        return train_function(draws)
    except UnboundLocalError:  # Keras' loop ran zero times: its `outputs` was never bound
        if draws.drawn == 0:
            raise StopIteration from None
        raise
    finally:
        draws.close()
