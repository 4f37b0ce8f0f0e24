"""Feature attributions of a trained model: integrated gradients and permutation importance.

Integrated gradients (Sundararajan et al., 2017) attribute one output to the input features:
(x - baseline) times the mean gradient along the straight path from the baseline to x. The baseline is
the training data's mean (from the export's stored statistics) or zero. The attributions of a record
add up to output(x) - output(baseline) (the completeness check `completeness_gap` reports).

Permutation importance works for any model, differentiable or not: how much the validation metric
drops when one feature's column is shuffled (seeded; averaged over repeats).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def target_outputs(task: str, outputs: np.ndarray) -> np.ndarray:
    """Which output each record's attribution explains: the predicted class (classification), the
    positive score (binary), the most likely label (multilabel), the first target (regression)."""
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    if task in ("classification", "multilabel"):
        return outputs.argmax(axis=1)
    return np.zeros(len(outputs), dtype=np.int64)


def integrated_gradients(model_fn, x: np.ndarray, targets: np.ndarray, baseline: np.ndarray,
                         steps: int = 32, batch_size: int = 4096) -> tuple[np.ndarray, float]:
    """(attributions shaped like x, completeness gap). `model_fn` maps a float32 tensor to outputs
    (records x outputs) and must be differentiable (a Keras model or a loaded SavedModel function)."""
    import tensorflow as tf

    x = np.asarray(x, np.float32)
    baseline = np.broadcast_to(np.asarray(baseline, np.float32), x.shape[1:])
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps  # midpoint Riemann sum
    grads = np.zeros_like(x)
    per_call = max(1, batch_size // steps)
    for start in range(0, len(x), per_call):
        chunk, chunk_targets = x[start:start + per_call], targets[start:start + per_call]
        n = len(chunk)
        path = baseline + alphas.reshape((steps,) + (1,) * x.ndim) * (chunk - baseline)[None]  # steps x n x ...
        path = tf.constant(path.reshape((steps * n,) + x.shape[1:]))
        index = np.tile(chunk_targets, steps)
        with tf.GradientTape() as tape:
            tape.watch(path)
            out = tf.reshape(tf.cast(model_fn(path), tf.float32), (steps * n, -1))
            chosen = tf.gather(out, index, axis=1, batch_dims=1)
        g = tape.gradient(chosen, path).numpy().reshape((steps, n) + x.shape[1:])
        grads[start:start + n] = g.mean(axis=0)
    attributions = (x - baseline) * grads
    # Completeness: sum of attributions == f(x) - f(baseline) for the explained output.
    fx = np.asarray(tf.reshape(tf.cast(model_fn(tf.constant(x)), tf.float32), (len(x), -1)))
    fb = np.asarray(tf.reshape(tf.cast(model_fn(tf.constant(np.broadcast_to(baseline, x.shape).copy())),
                                       tf.float32), (len(x), -1)))
    rows = np.arange(len(x))
    expected = fx[rows, targets] - fb[rows, targets]
    got = attributions.reshape(len(x), -1).sum(axis=1)
    gap = float(np.mean(np.abs(got - expected)) / (np.mean(np.abs(expected)) + 1e-12))
    return attributions, gap


def permutation_importance(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                           metric: Callable[[np.ndarray, np.ndarray], float], higher_is_better: bool,
                           repeats: int = 3, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """(baseline metric, mean drop per feature, metric per feature when shuffled) for tabular x
    (records x features). A drop > 0 always means the model got worse without that feature."""
    rng = np.random.default_rng(seed)
    base = metric(predict(x), y)
    shuffled_scores = np.zeros((x.shape[1], repeats))
    for feature in range(x.shape[1]):
        for r in range(repeats):
            permuted = x.copy()
            permuted[:, feature] = permuted[rng.permutation(len(x)), feature]
            shuffled_scores[feature, r] = metric(predict(permuted), y)
    mean_scores = shuffled_scores.mean(axis=1)
    drop = base - mean_scores if higher_is_better else mean_scores - base
    return float(base), drop, mean_scores


def task_metric(task: str) -> tuple[str, Callable[[np.ndarray, np.ndarray], float], bool]:
    """(name, metric(outputs, labels), higher is better) that permutation importance watches."""
    if task == "classification":
        return "accuracy", lambda o, y: float(np.mean(o.argmax(1) == y.reshape(-1))), True
    if task == "binary":
        return "accuracy", lambda o, y: float(np.mean((o.reshape(-1) >= 0.5) == (y.reshape(-1) > 0.5))), True
    if task == "multilabel":
        return "label_accuracy", lambda o, y: float(np.mean((o >= 0.5) == (y.reshape(o.shape) > 0.5))), True

    def r2(o, y):
        o, y = o.reshape(len(o), -1), y.reshape(len(o), -1).astype(np.float64)
        ss_res = ((y - o) ** 2).sum(0)
        ss_tot = ((y - y.mean(0)) ** 2).sum(0) + 1e-12
        return float(np.mean(1 - ss_res / ss_tot))

    return "r2", r2, True
