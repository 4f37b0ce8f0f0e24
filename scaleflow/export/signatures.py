"""Serving signatures that speak the task's language: scores and the top class name, or named targets.

A SavedModel gets two endpoints:

    serve             the model itself: `scores` as one tensor (what `model.export` gives; TFLite and
                      existing clients use it)
    serving_default   named outputs from the task (scaleflow/tasks): classification and binary give
                      `scores`, `class_id` and `class_name`; multilabel adds `labels` and `class_names`
                      (the predicted labels joined by '|'); regression gives `targets` and one output
                      per target name. TF Serving and `saved_model_cli` show these names.

The class and target names are constants inside the graph, so a served model answers with labels
without any side file; `check_named_outputs` verifies them on the reloaded model.

Example:

    loaded = tf.saved_model.load(export_dir)
    loaded.signatures["serving_default"](features=x)["class_name"]   # [b'setosa', b'virginica', ...]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scaleflow import registry


def _task(metadata: dict):
    return registry.get("task", metadata.get("task") or "classification")()


def names_of(metadata: dict, width: int) -> tuple[list[str], list[str]]:
    """(class names, target names) for a head of `width` outputs: the recorded ones, else indices."""
    task = _task(metadata)
    classes = [str(c) for c in (metadata.get("class_names") or [])]
    targets = [str(t) for t in (metadata.get("target_names") or [])]
    if task.name == "regression":
        return [], targets if len(targets) == width else ([f"target_{j}" for j in range(width)] if width > 1
                                                           else ["target"])
    expected = 2 if task.name == "binary" else width
    return (classes if len(classes) == expected else [str(i) for i in range(expected)]), []


def write_saved_model(model: Any, directory: str, metadata: dict) -> dict:
    """Write `model` as a SavedModel with `serve` (scores) and `serving_default` (named outputs)."""
    import keras
    import tensorflow as tf

    task = _task(metadata)
    width = int(model.outputs[0].shape[-1])
    class_names, target_names = names_of(metadata, width)
    inputs = model.inputs[0]
    spec = [tf.TensorSpec((None, *inputs.shape[1:]), inputs.dtype, name=inputs.name.split(":")[0])]

    def scores(x):
        return keras.ops.cast(model(x, training=False), "float32")

    archive = keras.export.ExportArchive()
    archive.track(model)
    # `serve` is the model in Keras ops: on the JAX backend Keras converts it with jax2tf. The named
    # outputs are TensorFlow (string constants) on top of that endpoint, on every backend.
    serve = archive.add_endpoint("serve", scores, input_signature=spec, **_jax2tf_options(keras))

    @tf.function(input_signature=spec, autograph=False)
    def named(x):
        return task.serving_outputs(tf.cast(serve(x), tf.float32), class_names, target_names)

    named.get_concrete_function()  # an endpoint given as a tf.function must be traced once
    archive.add_endpoint("serving_default", named)
    archive.write_out(directory, verbose=False)
    return {"signatures": ["serve", "serving_default"],
            "outputs": sorted(named_output_keys(task, class_names, target_names))}


# A model trained on JAX is exported as StableHLO inside the graph (XlaCallModule), lowered by
# default for the platform it was trained on only: lowered for all three, the same SavedModel serves
# on a CPU, GPU or TPU TensorFlow Serving (lowering needs no such device here).
SERVING_PLATFORMS = ("cpu", "cuda", "tpu")


def _jax2tf_options(keras) -> dict:
    if keras.backend.backend() != "jax":
        return {}
    return {"jax2tf_kwargs": {"native_serialization_platforms": SERVING_PLATFORMS}}


def named_output_keys(task, class_names, target_names) -> list[str]:
    """The output names of `serving_default` (computed on a dummy batch, without a model)."""
    import tensorflow as tf

    width = len(target_names) if task.name == "regression" else (1 if task.name == "binary" else len(class_names))
    return list(task.serving_outputs(tf.zeros((1, width)), class_names, target_names))


def check_named_outputs(outputs: dict, metadata: dict) -> None:
    """Raise AssertionError-like ValueError when the reloaded signature's labels do not follow its
    scores: class_name must be the name of the top score, each named target its column."""
    scores = np.asarray(outputs["scores"] if "scores" in outputs else outputs["targets"], dtype=np.float64)
    task = _task(metadata)
    class_names, target_names = names_of(metadata, scores.shape[-1])
    if task.name == "regression":
        from scaleflow.tasks.regression import output_name

        taken: dict = {"targets": None}
        for j, name in enumerate(target_names):
            key = output_name(name, taken)
            taken[key] = None
            if not np.allclose(np.asarray(outputs[key]), scores[:, j]):
                raise ValueError(f"output {key!r} is not target column {j}")
        return
    if task.name == "binary":
        top = (scores[:, 0] > 0.5).astype(int)
    else:
        top = np.argmax(scores, axis=-1)
    got = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(outputs["class_name"]).tolist()]
    expected = [class_names[i] for i in top]
    if got != expected:
        raise ValueError(f"class_name outputs {got[:5]} do not follow the scores (expected {expected[:5]})")
