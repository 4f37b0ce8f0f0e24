"""What an export stores about its training, beside the model (in `scaleflow_export.json`).

Servers and tools read it without TensorFlow: the task and its output names, the input's shape and
feature names, and per-feature training statistics that `mode=serve` compares live requests with
(drift). Computed with NumPy from a sample of this worker's training shard.
"""

from __future__ import annotations

import numpy as np

HISTOGRAM_BINS = 10


def feature_stats(x: np.ndarray) -> dict:
    """Per-feature count, mean, std, min, max and a 10-bin histogram (edges and probabilities) of the
    training sample `x` (records x features; images are flattened)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    stats = {"count": int(len(x)), "mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
             "min": x.min(0).tolist(), "max": x.max(0).tolist(), "histograms": []}
    for column in x.T:
        lo, hi = float(column.min()), float(column.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HISTOGRAM_BINS + 1)
        counts, _ = np.histogram(column, bins=edges)
        stats["histograms"].append({"edges": edges.tolist(), "p": (counts / max(1, counts.sum())).tolist()})
    return stats


def task_name(cfg) -> str:
    """`task` as a plain name, whether the config holds a string or a group node with a name."""
    task = cfg.get("task", None)
    return str(getattr(task, "name", None) or task or "classification")


def export_metadata(cfg, info, train_sample: np.ndarray) -> dict:
    """The `metadata` block of an export's integrity file."""
    extra = info.extra or {}
    flat = int(np.prod(info.input_shape)) if info.input_shape else 0
    tabular = len(info.input_shape) == 1
    return {
        "task": task_name(cfg),
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        # The task's reading of the labels (scaleflow/tasks): names in class-id order, target names.
        "class_names": list(getattr(info, "class_names", ()) or ()) or extra.get("class_names") or extra.get("classes"),
        "target_names": list(getattr(info, "target_names", ()) or ()) or None,
        "feature_names": extra.get("feature_names") or ([f"f{i}" for i in range(flat)] if tabular else None),
        # Drift statistics only where features are columns a person can name; images get none.
        "feature_stats": feature_stats(train_sample) if tabular and len(train_sample) else None,
        # A CSV's column encoding (columns, vocabularies from the training split, imputed values, label
        # classes): mode=evaluate|predict and servers apply it unchanged to raw records.
        "encoding": extra.get("encoding"),
    }
