"""What attributions show, for a person: ranked features, a plain-language summary, pictures."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ranking(names: Sequence[str], scores: np.ndarray, top_k: int) -> list[dict]:
    order = np.argsort(-np.asarray(scores), kind="stable")[:top_k]
    return [{"feature": names[i], "score": float(scores[i])} for i in order]


def summary(names: Sequence[str], ig: np.ndarray | None, permutation: dict | None) -> str:
    """One or two sentences: which features the model relies on, and what shuffling the top one costs."""
    scores = ig if ig is not None else (np.asarray(permutation["drop"]) if permutation else None)
    if scores is None or not len(scores):
        return "No attributions could be computed."
    order = np.argsort(-scores, kind="stable")
    total = float(np.sum(np.abs(scores))) or 1.0
    top = [i for i in order[:3] if scores[i] > 0.1 * scores[order[0]]][:2] or [order[0]]
    share = sum(float(abs(scores[i])) for i in top) / total
    names_text = " and ".join(names[i] for i in top)
    text = f"The model relies mostly on {names_text} ({share:.0%} of the attribution)."
    if permutation:
        drop = np.asarray(permutation["drop"])
        worst = int(np.argmax(drop))
        text += (f" Shuffling {names[worst]} changes {permutation['metric']} from {permutation['baseline']:.2f} "
                 f"to {permutation['shuffled'][worst]:.2f}.")
    return text


def plot_bars(per_view: dict[str, list[dict]], path: str, title: str) -> str:
    """Horizontal bars of the top features: one panel per view (overall, then per class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(per_view.items())
    rows = max(len(v) for _, v in views) if views else 1
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 0.35 * rows + 1.6), squeeze=False)
    for ax, (name, ranked) in zip(axes[0], views):
        labels = [r["feature"] for r in ranked][::-1]
        values = [r["score"] for r in ranked][::-1]
        ax.barh(labels, values, color="#4C72B0")
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_saliency(images: np.ndarray, attributions: np.ndarray, captions: Sequence[str], path: str) -> str:
    """Each image beside its saliency (|attribution| summed over channels) laid over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for i in range(n):
        image = images[i]
        shown = image if image.ndim == 2 or image.shape[-1] in (3, 4) else image[..., 0]
        lo, hi = float(np.min(shown)), float(np.max(shown))
        shown = (shown - lo) / (hi - lo + 1e-12)
        saliency = np.abs(attributions[i])
        saliency = saliency.sum(-1) if saliency.ndim == 3 else saliency
        axes[0, i].imshow(shown, cmap=None if shown.ndim == 3 else "gray")
        axes[0, i].set_title(captions[i], fontsize=8)
        axes[1, i].imshow(shown, cmap=None if shown.ndim == 3 else "gray")
        axes[1, i].imshow(saliency, cmap="inferno", alpha=0.6)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
