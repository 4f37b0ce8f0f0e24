"""What a model's outputs mean, per task: evaluation metrics and prediction columns (NumPy only).

Outputs are what the export returns: class probabilities (classification, (n, classes)), the positive
class's probability (binary, (n, 1)), one probability per label (multilabel, (n, labels)) or the
targets (regression, (n, targets)).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TASKS = ("classification", "binary", "multilabel", "regression")
EPS = 1e-7


def names_for(task: str, outputs: np.ndarray, metadata: dict) -> list[str]:
    """Class, label or target names: the model's own, else their indices."""
    width = outputs.shape[1] if outputs.ndim == 2 else 1
    key = "target_names" if task == "regression" else "class_names"
    names = metadata.get(key) or metadata.get("class_names") or []
    if task == "binary":
        return [str(n) for n in names] if len(names) == 2 else ["0", "1"]
    return [str(n) for n in names] if len(names) == width else [str(i) for i in range(width)]


# ------------------------------------------------------------------------------------- evaluation
def evaluate(task: str, outputs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """{"metrics": {...}, "per_class" | "per_target": {...}, "confusion_matrix": {...} (classification,
    binary)}. Every value is a plain float or list, ready for JSON."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task == "classification":
        return _classification(outputs, np.asarray(labels).astype(np.int64).reshape(-1), names)
    if task == "binary":
        return _binary(outputs.reshape(-1), np.asarray(labels).astype(np.int64).reshape(-1), names)
    if task == "multilabel":
        return _multilabel(outputs, np.asarray(labels).astype(np.int64).reshape(outputs.shape), names)
    if task == "regression":
        return _regression(outputs.reshape(len(outputs), -1),
                           np.asarray(labels, dtype=np.float64).reshape(len(outputs), -1), names)
    raise ValueError(f"task must be one of {', '.join(TASKS)}, received: {task!r}")


def confusion(labels: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, EPS), 0.0)
    return precision, recall, f1


def _per_class(counts: np.ndarray, names: Sequence[str]) -> dict:
    tp = np.diag(counts).astype(np.float64)
    precision, recall, f1 = _prf(tp, counts.sum(0) - tp, counts.sum(1) - tp)
    return {str(name): {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(counts[i].sum())} for i, name in enumerate(names)}


def _classification(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    n = probs.shape[1]
    predicted = probs.argmax(axis=1)
    counts = confusion(labels, predicted, n)
    per_class = _per_class(counts, names)
    supported = [c for c in per_class.values() if c["support"]]
    return {"metrics": {"accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
                        "loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1))))
                        if len(labels) else None,
                        "macro_f1": float(np.mean([c["f1"] for c in supported])) if supported else None},
            "per_class": per_class,
            "confusion_matrix": {"labels": list(map(str, names)), "matrix": counts.tolist(),
                                 "rows": "true class", "columns": "predicted class"}}


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (the rank statistic; ties count half); None with one class only."""
    positive, negative = labels == 1, labels == 0
    if not positive.any() or not negative.any():
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(sorted_scores[np.r_[False, np.diff(sorted_scores) == 0]]):  # average tied ranks
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = positive.sum(), negative.sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _binary(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    predicted = (probs >= 0.5).astype(np.int64)
    counts = confusion(labels, predicted, 2)
    p = np.clip(probs, EPS, 1 - EPS)
    precision, recall, f1 = _prf(np.array([counts[1, 1]], float), np.array([counts[0, 1]], float),
                                 np.array([counts[1, 0]], float))
    return {"metrics": {"accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
                        "loss": float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))) if len(labels) else None,
                        "precision": float(precision[0]), "recall": float(recall[0]), "f1": float(f1[0]),
                        "auc": auc(probs, labels)},
            "per_class": _per_class(counts, names),
            "confusion_matrix": {"labels": list(map(str, names)), "matrix": counts.tolist(),
                                 "rows": "true class", "columns": "predicted class"}}


def _multilabel(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    predicted = (probs >= 0.5).astype(np.int64)
    tp = (predicted & labels).sum(0).astype(float)
    fp = (predicted & (1 - labels)).sum(0).astype(float)
    fn = ((1 - predicted) & labels).sum(0).astype(float)
    precision, recall, f1 = _prf(tp, fp, fn)
    _, _, micro = _prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
    p = np.clip(probs, EPS, 1 - EPS)
    return {"metrics": {"subset_accuracy": float(np.mean((predicted == labels).all(1))) if len(labels) else None,
                        "label_accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
                        "loss": float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))) if len(labels) else None,
                        "micro_f1": float(micro[0]), "macro_f1": float(np.mean(f1)) if len(f1) else None},
            "per_class": {str(n): {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                   "support": int(labels[:, i].sum())} for i, n in enumerate(names)}}


def _regression(predicted: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> dict:
    error = predicted - targets
    mse = np.mean(error ** 2, axis=0)
    variance = np.var(targets, axis=0)
    r2 = np.where(variance > 0, 1 - mse / np.where(variance > 0, variance, 1), np.nan)
    per_target = {str(n): {"mse": float(mse[i]), "rmse": float(np.sqrt(mse[i])),
                           "mae": float(np.mean(np.abs(error[:, i]))),
                           "r2": None if np.isnan(r2[i]) else float(r2[i])} for i, n in enumerate(names)}
    finite_r2 = r2[~np.isnan(r2)]
    return {"metrics": {"mse": float(mse.mean()), "rmse": float(np.sqrt(mse.mean())),
                        "mae": float(np.mean(np.abs(error))),
                        "r2": float(finite_r2.mean()) if len(finite_r2) else None},
            "per_target": per_target}


def plot_confusion(matrix: dict, path: str, title: str) -> str:
    """Draw the confusion matrix (counts, row-normalised colour) as a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix["matrix"])
    names = matrix["labels"]
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if len(names) <= 30:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                        color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ predictions
def prediction_columns(task: str, outputs: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Output columns of mode=predict: the predicted class (its name) and every score, or the targets."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task == "regression":
        outputs = outputs.reshape(len(outputs), -1)
        if outputs.shape[1] == 1:
            return {"prediction": outputs[:, 0]}
        return {f"prediction_{n}": outputs[:, i] for i, n in enumerate(names)}
    if task == "binary":
        p = outputs.reshape(-1)
        return {"predicted": np.where(p >= 0.5, names[1], names[0]).astype(object), "score": p}
    if task == "multilabel":
        chosen = outputs >= 0.5
        labels = np.array(["|".join(n for n, c in zip(names, row) if c) for row in chosen], dtype=object)
        return {"predicted": labels, **{f"score_{n}": outputs[:, i] for i, n in enumerate(names)}}
    top = outputs.argmax(axis=1) if len(outputs) else np.zeros(0, dtype=np.int64)
    return {"predicted": np.asarray(names, dtype=object)[top] if len(outputs) else np.zeros(0, dtype=object),
            "score": outputs.max(axis=1) if len(outputs) else np.zeros(0),
            **{f"score_{n}": outputs[:, i] for i, n in enumerate(names)}}
