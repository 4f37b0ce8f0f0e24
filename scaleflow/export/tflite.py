"""TensorFlow Lite export (float32), verified with the TFLite interpreter."""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from scaleflow.export.base import Exporter, ExportVerificationError, staged_version
from scaleflow.export.saved_model import verification_tolerance

log = logging.getLogger("scaleflow")


def float32_copy(model):
    """TFLite builtins reject bfloat16: rebuild the model in float32 and copy the weights."""
    import keras

    if all(w.dtype == "float32" for w in model.weights) and model.dtype_policy.name == "float32":
        return model
    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"  # each layer's config carries its mixed policy; replace it
        return layer.__class__.from_config(config)

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = keras.models.clone_model(model, clone_function=as_float32)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clone.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return clone


class TFLite(Exporter):
    """`model.tflite` in `<export.dir>/<export.name>/<version>/`, converted from a `model.export`
    SavedModel (converting a `tf.saved_model.save` directory silently yields NaN outputs).

    Example: `python -m scaleflow export=tflite`
    """

    name = "tflite"

    def export(self, model, cfg, run_dir, sample, is_chief=True) -> dict:
        import tensorflow as tf

        model32 = float32_copy(model)
        with staged_version(cfg, run_dir, is_chief) as (staging, final):
            with tempfile.TemporaryDirectory() as saved:
                model32.export(saved, format="tf_saved_model", verbose=False)
                flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
            os.makedirs(staging)
            path = os.path.join(staging, "model.tflite")
            with open(path, "wb") as f:
                f.write(flatbuffer)
            diff = None
            if cfg.export.verify:
                interpreter = tf.lite.Interpreter(model_path=path)
                inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
                interpreter.resize_tensor_input(inp["index"], sample.shape)
                interpreter.allocate_tensors()
                interpreter.set_tensor(inp["index"], sample.astype(np.float32))
                interpreter.invoke()
                got = interpreter.get_tensor(out["index"])
                expected = np.asarray(model(sample, training=False), dtype=np.float32)
                diff = float(np.max(np.abs(got - expected)))
                tolerance = verification_tolerance(cfg)
                if not np.all(np.isfinite(got)) or not diff <= tolerance:
                    raise ExportVerificationError(f"TFLite verification failed: max abs diff {diff:.3g} "
                                                  f"> {tolerance} (or non-finite outputs)")
        if is_chief:
            log.info("exported TFLite model to %s (verified: max abs diff %s)", final,
                     "n/a" if diff is None else f"{diff:.2g}")
        return {"path": os.path.join(final, "model.tflite") if is_chief else None, "format": "tflite",
                "verified": diff is not None, "max_abs_diff": diff}
