"""SavedModel export for TensorFlow Serving, verified by reloading it."""

from __future__ import annotations

import numpy as np

from scaleflow.export.base import Exporter, ExportVerificationError


def serving_function(path: str, metadata: dict | None = None):
    """`predict(x)` -> scores over the `serving_default` signature of the SavedModel at `path`: what TF
    Serving and `mode=serve` call. The loaded object is kept alive by the closure (signatures die with
    it). With `metadata`, every call also checks the named outputs (class names, targets) against the
    scores (export/signatures.py)."""
    import tensorflow as tf

    from scaleflow.export.signatures import check_named_outputs

    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (name, spec), = signature.structured_input_signature[1].items()

    def predict(x: np.ndarray) -> np.ndarray:
        outputs = signature(**{name: tf.constant(x, dtype=spec.dtype)})
        if metadata is not None and ("scores" in outputs or "targets" in outputs):
            try:
                check_named_outputs({k: v.numpy() for k, v in outputs.items()}, metadata)
            except ValueError as e:
                raise ExportVerificationError(f"export verification failed: {e}") from None
        scores = outputs.get("scores", outputs.get("targets"))  # named outputs; older exports: the only one
        return np.asarray(scores if scores is not None else next(iter(outputs.values())))

    predict.loaded = loaded
    return predict


class SavedModel(Exporter):
    """`model.export(format="tf_saved_model")` (serve + serving_default signatures) into
    `<export.dir>/<export.name>/<version>/`, written atomically, then reloaded and compared.

    Example: `python -m scaleflow export.dir=/models export.name=classifier export.version=3`
    """

    name = "saved_model"
    backends = ("tensorflow", "jax")  # on JAX, Keras converts the model with jax2tf

    def write(self, model, directory, request) -> dict:
        from scaleflow.export.signatures import write_saved_model

        # serve: the scores; serving_default: the task's named outputs (class names, targets).
        fields = write_saved_model(model, directory, request.metadata)
        warmup = self.write_warmup(directory, request)
        return {**fields, **({"warmup_requests": warmup} if warmup else {})}

    def write_warmup(self, directory: str, request) -> int:
        """TF Serving's `assets.extra/tf_serving_warmup_requests` from the validation records the
        export is verified on: one request of 1 record and one of up to 32, so TF Serving and
        `mode=serve` trace the graph before the first real request. Returns the number written."""
        import tensorflow as tf

        from scaleflow.export.warmup import write_warmup

        sample = np.asarray(request.sample)
        if not len(sample):
            return 0
        signature = tf.saved_model.load(directory).signatures["serving_default"]
        (input_name, spec), = signature.structured_input_signature[1].items()
        batches = [sample[:1].astype(spec.dtype.as_numpy_dtype), sample[:32].astype(spec.dtype.as_numpy_dtype)]
        write_warmup(directory, request.cfg.export.name, input_name, batches)
        return len(batches)

    def load(self, directory, request):
        return serving_function(directory, request.metadata)  # verifies the labels on reload too
