"""TensorFlow Lite export (float32), verified with the TFLite interpreter."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from scaleflow.export.base import Exporter


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
    FILE = "model.tflite"

    def write(self, model, directory, request) -> dict:
        import tensorflow as tf

        with tempfile.TemporaryDirectory() as saved:
            float32_copy(model).export(saved, format="tf_saved_model", verbose=False)
            flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
        os.makedirs(directory)
        path = os.path.join(directory, self.FILE)
        with open(path, "wb") as f:
            f.write(flatbuffer)
        return {"path": path, "bytes": len(flatbuffer)}

    def load(self, directory, request):
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=os.path.join(directory, self.FILE))
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

        def predict(x: np.ndarray) -> np.ndarray:
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], x.astype(np.float32))
            interpreter.invoke()
            return interpreter.get_tensor(out["index"])

        return predict
