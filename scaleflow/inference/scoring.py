"""Running a trained SavedModel over records, in global record order (TensorFlow)."""

from __future__ import annotations

from typing import Any

import numpy as np


class LoadedModel:
    """A SavedModel's forward function (Keras' `serve` endpoint, else `serving_default`).

    Example:
        model = LoadedModel("outputs/.../export/mlp/1")
        scores = model(np.zeros((4, 32), np.float32))    # (4, outputs)
    """

    def __init__(self, path: str):
        from scaleflow import tf_logging

        tf = tf_logging.import_tensorflow()  # evaluate/predict/explain: without TF's C++ start-up lines
        self.path = path
        self._loaded = tf.saved_model.load(path)  # keep a reference: its functions die with it
        if hasattr(self._loaded, "serve"):
            self._fn, self._by_name = self._loaded.serve, None
        else:
            signature = self._loaded.signatures["serving_default"]
            (self._by_name, spec), = signature.structured_input_signature[1].items()
            self._fn = signature
        specs = getattr(self._fn, "input_signature", None) or []
        self.dtype = specs[0].dtype if specs else tf.float32

    def forward(self, x: Any) -> Any:
        """The scores as a tensor (differentiable: mode=explain takes gradients through it)."""
        import tensorflow as tf

        x = tf.cast(x, self.dtype)
        out = self._fn(**{self._by_name: x}) if self._by_name else self._fn(x)
        if isinstance(out, dict):  # a signature with named outputs: the scores
            out = out.get("scores", next(iter(out.values())))
        return tf.cast(out, tf.float32)

    def __call__(self, x: Any) -> np.ndarray:
        return np.asarray(self.forward(x))


def score(model: LoadedModel, dataset, config, indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(model outputs, labels) of the records `indices` (sorted global ids), batch by batch."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    outputs, labels = [], []
    if dataset.in_memory:  # in memory: slice NumPy arrays
        x, y = dataset.gather_arrays(config, indices)
        for start in range(0, len(indices), batch_size):
            outputs.append(model(x[start:start + batch_size]))
        labels.append(np.asarray(y))
    else:
        for x, y in dataset.take(config, indices).batch(batch_size):
            outputs.append(model(x))
            labels.append(np.asarray(y))
    if not outputs:
        return np.zeros((0, 0), np.float32), np.zeros(0)
    return np.concatenate(outputs), np.concatenate(labels)
