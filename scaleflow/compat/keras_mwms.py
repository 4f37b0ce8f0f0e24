"""Keras 3 `fit` / `evaluate` / `predict` under MultiWorkerMirroredStrategy: three version-guarded fixes.

Keras 3.15.1 fails out of the box with 2 workers, in `keras/src/backend/tensorflow/trainer.py`
(measured with TensorFlow 2.21; tests/test_multi_worker_compat.py shows each failure):

1. `_maybe_symbolic_build` MEAN-reduces the first data batch (a structure of PerReplica values) to
   build the model symbolically; the collective strategy cannot reduce it
   ("Attempt to convert a value (PerReplica...)"). Only the batch's shapes are needed there, so the
   fix builds from this worker's first local replica value instead.
2. `reduce_per_replica(..., "mean")` calls `strategy.reduce(MEAN, scalar, axis=0)` for every metric
   ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow#72388), and the train step
   hard-codes reduction "auto". The fix reduces rank-0 values with `axis=None`.

3. `steps_per_execution` > 1 fails in the multi-step function's `tf.while_loop`, which draws each batch
   with `get_next_as_optional` inside a `tf.cond` ("You must feed a value for placeholder tensor
   'while/.../Placeholder'"). The fix runs the `steps_per_execution` steps of one call in a plain
   `tf.while_loop` drawing with `get_next` (every scaleflow input repeats, and
   steps_per_execution divides the epoch's steps, so a call never runs out of data), and reduces
   the returned logs across workers once, after the call's last step (Keras returns only the last
   step's logs; the metric states are updated at every step either way), instead of one collective
   per metric per step. Python iterators (the
   profilers' one-step-per-call path) keep Keras' own function.

`patched()` installs the fixes only while its block runs, and only on the Keras versions listed in
`NEEDS_FIXES` (measured to need them); on any other version it changes nothing (and says so). The
multi-worker distribution holds it for its lifetime (`MultiWorkerDistribution.active`), so nothing
else in the process ever sees a patched Keras. `tests/test_multi_worker_compat.py` runs a real
2-worker cluster unpatched (expects the known failure) and patched (expects fit, evaluate and predict
to work; its probe is tests/mwms_probe.py), so a Keras upgrade that fixes or changes this makes the
test fail and points here.

Example:

    from scaleflow.compat import keras_mwms
    with keras_mwms.patched():   # around model.fit / evaluate / predict under MultiWorkerMirroredStrategy
        model.fit(...)
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

log = logging.getLogger("scaleflow")

# (major, minor) of Keras releases measured to need the fixes.
NEEDS_FIXES = {(3, 15)}


def keras_version() -> tuple[int, int]:
    import keras

    major, minor = (int(p) for p in keras.__version__.split(".")[:2])
    return major, minor


def needed(version: tuple[int, int] | None = None) -> bool:
    """True for the Keras versions known to need the fixes."""
    return (version or keras_version()) in NEEDS_FIXES


@contextlib.contextmanager
def patched(force: bool = False) -> Iterator[bool]:
    """Both fixes while the block runs, when this Keras version needs them (or `force`); Keras'
    own functions are restored when it ends, however it ends. Yields whether the fixes are on."""
    if not (force or needed()):
        import keras

        log.warning("Keras %s is not a version the multi-worker fixes were measured on (%s); running "
                    "unpatched. If fit fails under strategy=multi_worker, see scaleflow/compat/keras_mwms.py",
                    keras.__version__, ", ".join(f"{a}.{b}" for a, b in sorted(NEEDS_FIXES)))
        yield False
        return
    from keras.src.backend.tensorflow import trainer

    original_build, original_reduce = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica
    original_make = trainer.TensorFlowTrainer._make_function
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _scalar_safe(original_reduce)
    trainer.TensorFlowTrainer._make_function = _multi_step(original_make)
    try:
        yield True
    finally:
        trainer.TensorFlowTrainer._maybe_symbolic_build = original_build
        trainer.reduce_per_replica = original_reduce
        trainer.TensorFlowTrainer._make_function = original_make


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Keras' method, building from this worker's first local replica value instead of a MEAN
    reduction over replicas (only shapes and dtypes are needed to build)."""
    import tensorflow as tf
    from keras.src import tree

    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            batch = next(it)

            def local(x):
                if isinstance(x, tf.distribute.DistributedValues):
                    return self.distribute_strategy.experimental_local_results(x)[0]
                return x

            data_batch = tree.map_structure(local, batch)
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _scalar_safe(original):
    """reduce_per_replica that reduces rank-0 metric values with axis=None under the collective
    strategy (Keras passes axis=0, which TensorFlow rejects for scalars)."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy) \
                and not isinstance(strategy, tf.distribute.TPUStrategy):
            def _reduce(v):
                if v.shape.rank == 0:
                    return strategy.reduce("MEAN", v, axis=None)
                return strategy.reduce("MEAN", v, axis=0)

            return tree.map_structure(_reduce, values)
        return original(values, strategy, reduction)

    return reduce_per_replica


def _multi_step(original):
    """Keras' `_make_function`, with fix 3 for steps_per_execution > 1 under the collective strategy."""

    def _make_function(self, step_function):
        from keras.src.backend.tensorflow import trainer

        keras_function = original(self, step_function)
        if self.steps_per_execution == 1 or not trainer._collective_all_reduce_multi_worker(self.distribute_strategy):
            return keras_function
        return _steps_in_sequence(self, step_function, keras_function)

    return _make_function


def _steps_in_sequence(model, step_function, keras_function):
    """One call = `steps_per_execution` steps drawn with `get_next`, logs reduced after the last."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    strategy, steps = model.distribute_strategy, int(model.steps_per_execution)

    def without_optionals(data):
        return tf.nest.map_structure(lambda i: None if isinstance(i, tf.experimental.Optional) else i, data)

    @tf.function(reduce_retracing=True, jit_compile=model.jit_compile)
    def one_step(data):
        return strategy.run(step_function, args=(without_optionals(data),))

    @tf.function(reduce_retracing=True)
    def steps_on_iterator(iterator):
        # A loop, not `steps` unrolled calls: Grappler inlines every call, and optimising 20-32 copies
        # of the step took ~20 s on 2 cores before the first call ran.
        outputs = one_step(iterator.get_next())

        def body(step, outputs):
            return step + 1, one_step(iterator.get_next())

        _, outputs = tf.while_loop(lambda step, _: step < steps - 1, body, (tf.constant(0), outputs))
        return trainer.reduce_per_replica(outputs, strategy, reduction="auto")

    def function(iterator):
        if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
            return steps_on_iterator(iterator)
        return keras_function(iterator)  # a Python iterator: one compiled step per item (profilers)

    return function
