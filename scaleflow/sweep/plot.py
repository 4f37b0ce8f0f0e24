"""A PNG of the sweep's objective against each swept parameter (one panel per parameter)."""

from __future__ import annotations

import math
import os
from typing import List

from scaleflow.sweep.summary import JobRow


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def plot_objective(rows: List[JobRow], params: List[str], path: str, objective: str, direction: str) -> str:
    """Scatter objective vs each parameter; numeric parameters on a numeric (log where it spans
    decades) axis, others as categories. Failed jobs are marked on the x axis in red."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    params = params or ["job"]
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False)
    finite = [r.objective for r in rows if not math.isnan(r.objective)]
    floor = min(finite) if finite else 0.0
    for ax, param in zip(axes[0], params):
        values = [str(r.job) if param == "job" else r.params.get(param, "") for r in rows]
        numeric = [_number(v) for v in values]
        is_numeric = param != "job" and all(n is not None for n in numeric)
        if is_numeric:
            xs = numeric
            positive = [x for x in xs if x > 0]
            if len(positive) == len(xs) and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
        else:
            categories = sorted(set(values), key=lambda v: (_number(v) is None, _number(v) or 0, v))
            xs = [categories.index(v) for v in values]
            ax.set_xticks(range(len(categories)), categories, rotation=20)
        ok = [(x, r.objective) for x, r in zip(xs, rows) if not math.isnan(r.objective)]
        bad = [x for x, r in zip(xs, rows) if math.isnan(r.objective)]
        if ok:
            ax.scatter([p[0] for p in ok], [p[1] for p in ok], color="tab:blue", label="job")
        best = [(x, r.objective) for x, r in zip(xs, rows) if r.best]
        if best:
            ax.scatter([best[0][0]], [best[0][1]], marker="*", s=220, color="tab:orange", label="best", zorder=3)
        if bad:
            ax.scatter(bad, [floor] * len(bad), marker="x", color="tab:red", label="failed / no objective")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{objective} ({direction})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"sweep: {objective} per job ({len(rows)} jobs)")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
