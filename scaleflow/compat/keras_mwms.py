"""Keras 3 `fit` / `evaluate` / `predict` under MultiWorkerMirroredStrategy: two version-guarded fixes.

Keras 3.15.1 fails out of the box with 2 workers, in `keras/src/backend/tensorflow/trainer.py`
(see PITFALLS.md):

1. `_maybe_symbolic_build` MEAN-reduces the first data batch (a structure of PerReplica values) to
   build the model symbolically; the collective strategy cannot reduce it
   ("Attempt to convert a value (PerReplica...)"). Only the batch's shapes are needed there, so the
   fix builds from this worker's first local replica value instead.
2. `reduce_per_replica(..., "mean")` calls `strategy.reduce(MEAN, scalar, axis=0)` for every metric
   ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow#72388), and the train step
   hard-codes reduction "auto". The fix reduces rank-0 values with `axis=None`.

`apply()` patches only the Keras versions listed in `NEEDS_FIXES`, which were measured to need both
fixes; on any other version it changes nothing (and says so once). `tests/test_multi_worker_compat.py`
runs a real 2-worker cluster unpatched (expects the known failure) and patched (expects fit, evaluate
and predict to work), so a Keras upgrade that fixes or changes this makes the test fail and points here.

Example:

    from scaleflow.compat import keras_mwms
    keras_mwms.apply()          # before model.fit under MultiWorkerMirroredStrategy

    keras_mwms.probe_cluster()  # a real 2-worker cluster: what fails without each fix (see below)
"""

from __future__ import annotations

import logging

log = logging.getLogger("scaleflow")

# (major, minor) of Keras releases measured to need both fixes.
NEEDS_FIXES = {(3, 15)}

_applied = False
_warned = False


def keras_version() -> tuple[int, int]:
    import keras

    major, minor = (int(p) for p in keras.__version__.split(".")[:2])
    return major, minor


def needed(version: tuple[int, int] | None = None) -> bool:
    """True for the Keras versions known to need the fixes."""
    return (version or keras_version()) in NEEDS_FIXES


def apply(force: bool = False) -> bool:
    """Install both fixes when this Keras version needs them (or `force`); returns whether they are on.
    Idempotent."""
    global _applied, _warned
    if _applied:
        return True
    if not (force or needed()):
        if not _warned:
            import keras

            log.warning("Keras %s is not a version the multi-worker fixes were measured on (%s); running "
                        "unpatched. If fit fails under strategy=multi_worker, see scaleflow/compat/keras_mwms.py",
                        keras.__version__, ", ".join(f"{a}.{b}" for a, b in sorted(NEEDS_FIXES)))
            _warned = True
        return False
    from keras.src.backend.tensorflow import trainer

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    original = trainer.reduce_per_replica
    if not getattr(original, "_scaleflow_fixed", False):
        trainer.reduce_per_replica = _scalar_safe(original)
    _applied = True
    return True


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

    reduce_per_replica._scaleflow_fixed = True
    return reduce_per_replica


# ------------------------------------------------------------------------------------------ probe
# The probe shows, on a real cluster, what each fix is for. Stages run in order in every worker, each
# on a fresh model: unpatched, then with the build fix only, then with both fixes. Both known failures
# happen while tracing (before any collective runs), so the workers stay in step between stages.
PROBE_STAGES = ("unpatched", "build_fix_only", "patched")


def _fit_evaluate_predict(strategy) -> str:
    import keras
    import numpy as np
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def dataset(ctx):
        b = ctx.get_per_replica_batch_size(16)
        return tf.data.Dataset.from_tensor_slices((x, y)).shard(ctx.num_input_pipelines, ctx.input_pipeline_id) \
            .batch(b, drop_remainder=True).repeat()

    try:
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
            model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        ds = strategy.distribute_datasets_from_function(dataset)
        model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
        model.evaluate(ds, steps=2, verbose=0)
        out = model.predict(ds, steps=1, verbose=0)
        return "ok" if out.shape[-1] == 2 else f"predict returned shape {out.shape}"
    except Exception as e:  # noqa: BLE001 - the probe reports the failure it saw
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def probe() -> dict[str, str]:
    """One worker of a real cluster (TF_CONFIG from the environment): fit, evaluate and predict a tiny
    model at each of PROBE_STAGES; returns "ok" or the first error line per stage."""
    import tensorflow as tf

    from scaleflow.cluster.logs import READY

    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=60))
    print(READY, flush=True)  # the strategy exists; its first collective runs in the first stage
    results = {"unpatched": _fit_evaluate_predict(strategy)}
    from keras.src.backend.tensorflow import trainer

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    results["build_fix_only"] = _fit_evaluate_predict(strategy)
    apply(force=True)
    results["patched"] = _fit_evaluate_predict(strategy)
    return results


def probe_cluster(num_workers: int = 2, timeout_s: float = 120.0) -> list[dict[str, str]]:
    """Run the probe on a real local cluster of `num_workers` processes; one result dict per worker."""
    import json
    import os
    import sys

    from scaleflow.cluster import LocalCluster, free_ports
    from scaleflow.cluster.tf_config import local_tf_config

    ports = free_ports(num_workers)
    cluster = LocalCluster([[sys.executable, "-m", "scaleflow.compat.keras_mwms", "--probe"]] * num_workers,
                           [{**os.environ, "TF_CONFIG": local_tf_config(ports, r), "PYTHONUNBUFFERED": "1",
                             "TF_CPP_MIN_LOG_LEVEL": "2"} for r in range(num_workers)],
                           startup_timeout_s=timeout_s, finish_timeout_s=timeout_s, out=None)
    cluster.run()
    results = []
    for stream in cluster.streams:
        lines = [line for line in stream.lines if line.startswith("PROBE_RESULT ")]
        results.append(json.loads(lines[-1][len("PROBE_RESULT "):]) if lines else {})
    return results


if __name__ == "__main__":
    import json
    import os
    import sys

    if sys.argv[1:] != ["--probe"]:
        sys.exit("usage: python -m scaleflow.compat.keras_mwms --probe   (with TF_CONFIG set; see probe_cluster)")
    print("PROBE_RESULT " + json.dumps(probe()), flush=True)
    os._exit(0)  # collective ops may keep threads alive after a failure; the result is printed
