"""SavedModel export for TensorFlow Serving, verified by reloading it."""

from __future__ import annotations

import numpy as np

from scaleflow.export.base import Exporter


def serving_function(path: str):
    """`predict(x)` over the `serving_default` signature of the SavedModel at `path`: what TF Serving
    and `mode=serve` call. The loaded object is kept alive by the closure (signatures die with it)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (name, spec), = signature.structured_input_signature[1].items()

    def predict(x: np.ndarray) -> np.ndarray:
        outputs = signature(**{name: tf.constant(x, dtype=spec.dtype)})
        return np.asarray(next(iter(outputs.values())))

    predict.loaded = loaded
    return predict


class SavedModel(Exporter):
    """`model.export(format="tf_saved_model")` (serve + serving_default signatures) into
    `<export.dir>/<export.name>/<version>/`, written atomically, then reloaded and compared.

    Example: `python -m scaleflow export.dir=/models export.name=classifier export.version=3`
    """

    name = "saved_model"

    def write(self, model, directory, request) -> dict:
        model.export(directory, format="tf_saved_model", verbose=False)
        return {"signatures": ["serve", "serving_default"]}

    def load(self, directory, request):
        return serving_function(directory)
