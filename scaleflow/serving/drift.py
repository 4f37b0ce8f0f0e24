"""Input drift: how far recent requests' features have moved from the training data.

The export stores, per feature, a 10-bin histogram of a training sample (`metadata.feature_stats`,
see export/metadata.py). The server counts request values into the same bins (values outside the
training range fall into the end bins) over a window of `serve.drift_window` rows, then computes the
Population Stability Index per feature:

    PSI = sum over bins of (q - p) * ln(q / p)      p: training share, q: window share

PSI < 0.1 is usually read as no shift, 0.1-0.2 as moderate, > 0.2 as a real shift. At each window's
end the scores are published and every feature above `serve.drift_threshold` is logged once (the
log names the feature and the score, never request values).

Example:
    monitor = DriftMonitor(feature_stats, ["f0", "f1"], window=1000, threshold=0.2, on_window=print)
    monitor.observe(x)         # rows x features, any number of rows per call
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

EPSILON = 1e-4  # an empty bin on either side would make PSI infinite


def psi(expected: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """PSI per row of (features x bins) probability arrays."""
    p = np.clip(np.asarray(expected, dtype=np.float64), EPSILON, None)
    q = np.clip(np.asarray(observed, dtype=np.float64), EPSILON, None)
    return np.sum((q - p) * np.log(q / p), axis=-1)


class DriftMonitor:
    """Args:
        feature_stats: the export's `metadata.feature_stats` (with `histograms`: edges, p).
        feature_names: names for the features (the export's `feature_names`).
        window: rows per window.
        threshold: PSI above which a feature is reported.
        on_window: `on_window(scores, drifted)` at each window's end: {feature: psi}, [features above].
    """

    def __init__(self, feature_stats: dict, feature_names: list[str] | None, window: int, threshold: float,
                 on_window: Callable[[dict, list], None] | None = None):
        histograms = feature_stats["histograms"]
        self.names = list(feature_names or [f"f{i}" for i in range(len(histograms))])[:len(histograms)]
        # Inner edges only (features x bins-1): anything below/above the training range lands in the end bins.
        self.inner_edges = np.asarray([np.asarray(h["edges"], dtype=np.float64)[1:-1] for h in histograms])
        self.expected = np.asarray([h["p"] for h in histograms], dtype=np.float64)
        self.bins = self.expected.shape[1]
        self.offsets = np.arange(len(histograms)) * self.bins
        self.window, self.threshold, self.on_window = window, threshold, on_window
        self.counts = np.zeros_like(self.expected)
        self.rows = 0
        self.windows = 0
        self.last: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != len(self.inner_edges):
            return  # the signature already refused such requests; nothing comparable here
        done = []
        with self._lock:
            start = 0
            while start < len(x):
                take = min(len(x) - start, self.window - self.rows)
                chunk = x[start:start + take]
                # Every feature at once: a value's bin is how many inner edges it reaches.
                index = (chunk[:, :, None] >= self.inner_edges[None]).sum(axis=2) + self.offsets
                self.counts += np.bincount(index.ravel(), minlength=self.counts.size).reshape(self.counts.shape)
                self.rows += take
                start += take
                if self.rows >= self.window:
                    done.append(self._close_window())
        for scores, drifted in done:
            if self.on_window is not None:
                self.on_window(scores, drifted)

    def _close_window(self) -> tuple[dict, list]:
        observed = self.counts / self.counts.sum(axis=1, keepdims=True)
        values = psi(self.expected, observed)
        scores = {name: float(v) for name, v in zip(self.names, values)}
        self.counts[:] = 0
        self.rows = 0
        self.windows += 1
        self.last = scores
        return scores, [name for name, v in scores.items() if v > self.threshold]
