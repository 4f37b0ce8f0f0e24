"""SavedModel export for TensorFlow Serving, verified by reloading it."""

from __future__ import annotations

import logging

import numpy as np

from scaleflow.export.base import Exporter, ExportVerificationError, staged_version

log = logging.getLogger("scaleflow")


def verify_saved_model(path: str, model, sample: np.ndarray) -> float:
    """Reload `path` and return the max abs difference of `serving_default` against `model`."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # keep a reference: signatures die with the object
    expected = np.asarray(model(sample, training=False), dtype=np.float32)
    signature = loaded.signatures["serving_default"]
    (name, spec), = signature.structured_input_signature[1].items()
    outputs = signature(**{name: tf.constant(sample, dtype=spec.dtype)})
    got = np.asarray(next(iter(outputs.values())), dtype=np.float32)
    return float(np.max(np.abs(got - expected))) if got.size else 0.0


def verification_tolerance(cfg) -> float:
    """bfloat16/float16 carry ~3 significant digits: a reloaded graph may round differently."""
    return max(cfg.export.tolerance, 1e-2) if cfg.trainer.mixed_precision != "off" else cfg.export.tolerance


class SavedModel(Exporter):
    """`model.export(format="tf_saved_model")` (serve + serving_default signatures) into
    `<export.dir>/<export.name>/<version>/`, written atomically, then reloaded and compared.

    Example: `python -m scaleflow export.dir=/models export.name=classifier export.version=3`
    """

    name = "saved_model"

    def export(self, model, cfg, run_dir, sample, is_chief=True) -> dict:
        with staged_version(cfg, run_dir, is_chief) as (staging, final):
            model.export(staging, format="tf_saved_model", verbose=False)
            diff = verify_saved_model(staging, model, sample) if cfg.export.verify else None
            tolerance = verification_tolerance(cfg)
            if diff is not None and not diff <= tolerance:
                raise ExportVerificationError(f"export verification failed: the reloaded SavedModel differs from "
                                              f"the trained model by {diff:.3g} > tolerance {tolerance} "
                                              f"(export.tolerance)")
        if is_chief:
            log.info("exported SavedModel to %s (verified: max abs diff %s)", final,
                     "n/a" if diff is None else f"{diff:.2g}")
        return {"path": final if is_chief else None, "format": "saved_model", "verified": diff is not None,
                "max_abs_diff": diff, "signatures": ["serve", "serving_default"]}
