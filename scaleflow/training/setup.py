"""Small pieces of the training run: seeds, precision, optimizer, resume."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil

from scaleflow.manifest import Manifest

log = logging.getLogger("scaleflow")

OPTIMIZERS = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop", "adamw": "AdamW", "adagrad": "Adagrad",
              "nadam": "Nadam"}
PRECISION_POLICY = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow


def set_precision(mode: str) -> str:
    import keras

    policy = PRECISION_POLICY[mode]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def make_optimizer(trainer, options: dict | None = None):
    """`options` override keyword arguments (a learning-rate schedule, clipping: training/controls.py)."""
    import keras

    cls = getattr(keras.optimizers, OPTIMIZERS[trainer.optimizer])
    kwargs = {"learning_rate": trainer.learning_rate}
    if trainer.optimizer in ("sgd", "rmsprop") and trainer.momentum:
        kwargs["momentum"] = trainer.momentum
    if trainer.weight_decay:
        kwargs["weight_decay"] = trainer.weight_decay
    optimizer = cls(**{**kwargs, **(options or {})})
    if trainer.mixed_precision == "fp16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


BACKUP_META = "training_metadata.json"


def backup_dir(run_dir: str, worker_index: int) -> str:
    return os.path.join(run_dir, "backup", f"worker-{worker_index}")


def completed_epochs(directory: str) -> int:
    """Epochs completed by an interrupted run, from Keras' BackupAndRestore metadata (0 if none)."""
    try:
        with open(os.path.join(directory, BACKUP_META)) as f:
            return int(json.load(f).get("epoch", 0))  # Keras stores the count of completed epochs
    except (OSError, ValueError, TypeError):
        return 0


def discard_backup(directory: str) -> None:
    """Delete a finished run's resume checkpoint (and the backup/ dir once no worker has one)."""
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(directory))


@contextlib.contextmanager
def kept_for_a_rerun(backup: str):
    """Around the export: a failure names what broke (never a raw traceback) and says that the
    trained model is kept in `backup` for a rerun, which goes straight to the export."""
    from scaleflow.errors import ScaleflowError

    try:
        yield
    except Exception as e:
        hint = (f"The trained model is kept ({backup}): fix the cause and run the same command again; "
                "it exports without training again")
        log.error("the export failed: %s. %s", e, hint)
        if isinstance(e, ScaleflowError):
            raise
        raise ScaleflowError(f"the export failed: {type(e).__name__}: {e}. {hint}") from e


def prepare_resume(directory: str, resume: bool) -> int:
    if not resume and os.path.isdir(directory):
        shutil.rmtree(directory)
        return 0
    return completed_epochs(directory)


def align_backups(run_dir: str) -> None:
    """The one resume policy of every multi-process strategy: every worker resumes from the same
    epoch, the most advanced one any worker completed that run.json's history also records.

    Each worker keeps its own backup dir (Keras' BackupAndRestore has no chief logic), and a kill can
    land between two workers' end-of-epoch saves, leaving them an epoch apart; workers resuming from
    different epochs would run different step counts and wait on each other forever. After every
    synchronous epoch all workers hold identical weights and optimizer state, so the most advanced
    backup is copied over the others. Only the writer records metrics, before its own backup
    (train.py), so another worker's backup may be one epoch ahead of run.json's history: resuming
    from it would leave that epoch's metrics out of run.json forever. So the epoch is capped at the
    history's (`epochs_completed`): at most one epoch is trained again. Called by `mode=train` before
    a strategy launches its processes (no worker runs yet), for the backups this host sees.
    """
    root = os.path.join(run_dir, "backup")
    if not os.path.isdir(root):
        return
    dirs = sorted(os.path.join(root, d) for d in os.listdir(root) if d.startswith("worker-"))
    epochs = {d: completed_epochs(d) for d in dirs if os.path.isdir(d)}
    if not epochs or len(set(epochs.values())) == 1:
        return
    recorded = (Manifest.load(run_dir) or {}).get("epochs_completed")
    usable = {d: e for d, e in epochs.items() if not isinstance(recorded, int) or e <= recorded} or epochs
    best = max(usable, key=lambda d: (usable[d], -dirs.index(d)))
    log.warning("worker backups are at different epochs %s; resuming every worker from %s's (epoch %d)",
                {os.path.basename(d): e for d, e in epochs.items()}, os.path.basename(best), epochs[best])
    for d, epoch in epochs.items():
        if epoch != epochs[best]:
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(best, d)
