"""Shared by benchmarks: peak memory of this process. (Epochs are timed with scaleflow's own
Throughput callback, so baselines and scaleflow are measured alike.)"""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
