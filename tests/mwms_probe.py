"""A probe for scaleflow/compat/keras_mwms.py: on a real cluster, what fails without each fix.

`probe_cluster()` starts `num_workers` processes running this file with `--probe`; each worker fits,
evaluates and predicts a tiny model at each of PROBE_STAGES on a fresh model: unpatched, then with
the build fix only, then with both fixes; then it trains with several steps per call, with fixes 1-2
only and with all three, comparing the weights against one step per call and against a model
trained in this process alone on the same global batches. The known failures happen while tracing
(before any collective runs), so the workers stay in step between stages.
"""

from __future__ import annotations

from scaleflow.compat import keras_mwms

PROBE_STAGES = ("unpatched", "build_fix_only", "patched", "several_steps_without_fix_3", "several_steps")
STEPS, PER_WORKER_BATCH = 8, 8


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


def _global_batches(workers: int):
    """STEPS global batches of PER_WORKER_BATCH x workers records: worker w's part of batch k is rows
    [w * PER_WORKER_BATCH, (w + 1) * PER_WORKER_BATCH) of it."""
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(size=(STEPS, workers * PER_WORKER_BATCH, 6)).astype("float32")
    y = rng.integers(0, 3, size=(STEPS, workers * PER_WORKER_BATCH)).astype("int32")
    return x, y


def _mlp():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


def _several_steps(strategy, steps_per_execution: int) -> tuple[str, list | None]:
    """Train STEPS steps of an MLP with `steps_per_execution` under `strategy`: ("ok", weights) or the
    first error line."""
    import tensorflow as tf

    workers = strategy.num_replicas_in_sync
    x, y = _global_batches(workers)

    def dataset(ctx):
        rows = slice(ctx.input_pipeline_id * PER_WORKER_BATCH, (ctx.input_pipeline_id + 1) * PER_WORKER_BATCH)
        return tf.data.Dataset.from_tensor_slices((x[:, rows], y[:, rows])).repeat()  # one batch per element

    try:
        with strategy.scope():
            model = _mlp()
            model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"],
                          steps_per_execution=steps_per_execution)
        model.fit(strategy.distribute_datasets_from_function(dataset), epochs=1, steps_per_epoch=STEPS, verbose=0)
        return "ok", [w.tolist() for w in model.get_weights()]
    except Exception as e:  # noqa: BLE001 - the probe reports the failure it saw (TensorFlow's whole message:
        # its first line is only "Graph execution error:")
        return f"{type(e).__name__}: {' '.join(str(e).split())[-600:]}", None


def _one_process_reference(workers: int) -> list:
    """The same STEPS global batches, trained in this process without a strategy."""
    x, y = _global_batches(workers)
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    for k in range(STEPS):
        model.train_on_batch(x[k], y[k])
    return [w.tolist() for w in model.get_weights()]


def _max_diff(a, b) -> float:
    import numpy as np

    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


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
    keras_make_function = trainer.TensorFlowTrainer._make_function  # Keras' own, unpatched
    with keras_mwms.patched(force=True):
        fixed_make_function = trainer.TensorFlowTrainer._make_function
        trainer.TensorFlowTrainer._make_function = keras_make_function  # fixes 1 and 2 only
        try:
            results["several_steps_without_fix_3"] = _several_steps(strategy, 4)[0]
        finally:
            trainer.TensorFlowTrainer._make_function = fixed_make_function
        status, one_per_call = _several_steps(strategy, 1)
        status_4, four_per_call = _several_steps(strategy, 4)
    if status != "ok" or status_4 != "ok":
        results["several_steps"] = f"1 step per call: {status}; 4 steps per call: {status_4}"
    else:
        reference = _one_process_reference(strategy.num_replicas_in_sync)
        results["several_steps"] = "ok"
        results["several_steps_vs_one_per_call"] = _max_diff(four_per_call, one_per_call)
        results["several_steps_vs_one_process"] = _max_diff(four_per_call, reference)
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
