"""Where a run's TensorBoard files go: the scalars (training's TensorBoard callback) and the profiles
(profile=tensorboard|summary) of one worker share its directory."""

from __future__ import annotations

import os


def tensorboard_dir(run_dir: str, distribution) -> str:
    """Each worker writes its own event files: TensorBoard's callback has no chief logic."""
    base = os.path.join(run_dir, "tensorboard")
    return base if distribution.num_workers == 1 else os.path.join(base, f"worker-{distribution.worker_index}")


def profile_dir(run_dir: str, distribution) -> str:
    """Beside the scalars of the `train` run (where Keras put its profiles), one dir per worker, so
    each worker's profile is its own run in TensorBoard's Profile listing (`worker-<i>/train`)."""
    return os.path.join(tensorboard_dir(run_dir, distribution), "train")
