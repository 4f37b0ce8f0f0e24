"""A probe for scaleflow/compat/keras_mwms.py: on a real cluster, what fails without each fix.

`probe_cluster()` starts `num_workers` processes running this file with `--probe`; each worker fits,
evaluates and predicts a tiny model at each of PROBE_STAGES on a fresh model: unpatched, then with
the build fix only, then with both fixes. Both known failures happen while tracing (before any
collective runs), so the workers stay in step between stages.
"""

from __future__ import annotations

from scaleflow.compat import keras_mwms

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

    original = trainer.TensorFlowTrainer._maybe_symbolic_build
    trainer.TensorFlowTrainer._maybe_symbolic_build = keras_mwms._maybe_symbolic_build
    try:
        results["build_fix_only"] = _fit_evaluate_predict(strategy)
    finally:
        trainer.TensorFlowTrainer._maybe_symbolic_build = original
    with keras_mwms.patched(force=True):
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
    cluster = LocalCluster([[sys.executable, os.path.abspath(__file__), "--probe"]] * num_workers,
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
        sys.exit("usage: python tests/mwms_probe.py --probe   (with TF_CONFIG set; see probe_cluster)")
    print("PROBE_RESULT " + json.dumps(probe()), flush=True)
    os._exit(0)  # collective ops may keep threads alive after a failure; the result is printed
