"""profile.timeline=true (strategy=horovod): Horovod's own timeline of its collectives.

Horovod writes it when its ranks start with `HOROVOD_TIMELINE=<file>` (rank 0 writes one file for
every rank: negotiation, allreduce, memcpy per tensor). The file is Chrome trace JSON: open it in
chrome://tracing or https://ui.perfetto.dev (TensorBoard's trace viewer reads only its own profiles).
"""

from __future__ import annotations

import os

ENV = "HOROVOD_TIMELINE"


def timeline_path(run_dir: str) -> str:
    return os.path.join(os.path.abspath(run_dir), "tensorboard", "horovod_timeline.json")


def timeline_env(cfg, run_dir: str) -> dict:
    """The environment horovodrun's ranks need for profile.timeline (empty when it is off)."""
    if not cfg.profile.get("timeline"):
        return {}
    os.makedirs(os.path.dirname(timeline_path(run_dir)), exist_ok=True)
    return {ENV: timeline_path(run_dir)}
