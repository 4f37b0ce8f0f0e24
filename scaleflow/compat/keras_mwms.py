"""Keras 3 `fit` / `evaluate` / `predict` under MultiWorkerMirroredStrategy: two version-guarded fixes.

Keras 3.15.1 fails out of the box with 2 workers, in `keras/src/backend/tensorflow/trainer.py`
(measured with TensorFlow 2.21; tests/test_multi_worker_compat.py shows both failures):

1. `_maybe_symbolic_build` MEAN-reduces the first data batch (a structure of PerReplica values) to
   build the model symbolically; the collective strategy cannot reduce it
   ("Attempt to convert a value (PerReplica...)"). Only the batch's shapes are needed there, so the
   fix builds from this worker's first local replica value instead.
2. `reduce_per_replica(..., "mean")` calls `strategy.reduce(MEAN, scalar, axis=0)` for every metric
   ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow#72388), and the train step
   hard-codes reduction "auto". The fix reduces rank-0 values with `axis=None`.

`patched()` installs both fixes only while its block runs, and only on the Keras versions listed in
`NEEDS_FIXES` (measured to need both); on any other version it changes nothing (and says so). The
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

# (major, minor) of Keras releases measured to need both fixes.
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
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _scalar_safe(original_reduce)
    try:
        yield True
    finally:
        trainer.TensorFlowTrainer._maybe_symbolic_build = original_build
        trainer.reduce_per_replica = original_reduce


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
