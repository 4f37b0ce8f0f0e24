"""Training controls: learning-rate schedule and gradient clipping for the optimizer, early stopping
and keeping the best epoch, with state that survives a SIGKILL.

Keras' EarlyStopping keeps its state (best value, epochs without improvement, best weights) in memory
and BackupAndRestore does not save callback state, so a resumed run would start counting patience
afresh and forget the best weights. `TrainingControls` persists its state next to the resume
checkpoint after every epoch, atomically, keyed by the epoch it describes; the best weights go to their
own file (`best-<epoch>.npz`). It runs before BackupAndRestore in the callback list, so for every
epoch the checkpoint records, the controls' state of that same epoch is already on disk: a resumed run
loads exactly that state, stops at the same epoch and exports the same weights as an uninterrupted
run. States of the last few epochs are kept (a kill between the two writes, or Keras falling back to
its previous checkpoint, still finds the matching one); best-weight files nobody refers to are removed.

Example:

    python -m scaleflow trainer.early_stopping.enabled=true trainer.early_stopping.patience=3 \\
        trainer.keep_best=true trainer.lr_schedule.name=cosine trainer.clip_norm=1.0
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from typing import Any

import numpy as np

from scaleflow.errors import ConfigError, did_you_mean, one_of

log = logging.getLogger("scaleflow")

STATE_FILE = "training_controls.json"
KEEP_STATES = 3  # epochs of state kept: the checkpoint's epoch and the ones it may fall back to


# ------------------------------------------------------------------------------------ validation
def check_controls(cfg) -> None:
    """Config rules for schedules, clipping, early stopping and keep_best, without TensorFlow."""
    from scaleflow.config import schema
    from scaleflow.config.fields import check_node
    from scaleflow.tasks.checks import produced_metrics

    t = cfg.trainer
    check_node("trainer.lr_schedule", t.lr_schedule, schema.LRScheduleConfig)
    check_node("trainer.early_stopping", t.early_stopping, schema.EarlyStoppingConfig)
    if t.clip_norm is not None and t.clip_value is not None:
        raise ConfigError("trainer.clip_value", t.clip_value, "null when trainer.clip_norm is set",
                          "Keras optimizers clip by one rule: choose trainer.clip_norm (global norm) or "
                          "trainer.clip_value")
    s = t.lr_schedule
    if s.name == "cosine" and s.min_lr > t.learning_rate:
        raise ConfigError("trainer.lr_schedule.min_lr", s.min_lr, f"at most trainer.learning_rate ({t.learning_rate})")
    if s.warmup_epochs >= t.epochs and s.warmup_epochs > 0:
        raise ConfigError("trainer.lr_schedule.warmup_epochs", s.warmup_epochs,
                          f"fewer than trainer.epochs ({t.epochs})")
    es = t.early_stopping
    if not (es.enabled or t.keep_best):
        return
    validation = cfg.data.validation_split > 0
    if t.keep_best and not validation:
        raise ConfigError("trainer.keep_best", True, "false when there is no validation data",
                          "The best epoch is judged on validation data: set data.validation_split > 0")
    produced = produced_metrics(cfg, validation)
    if es.monitor not in produced:
        why = "" if validation or not es.monitor.startswith("val_") else " (data.validation_split=0: no val_ metrics)"
        raise ConfigError("trainer.early_stopping.monitor", es.monitor,
                          f"a metric this run produces{why}: {one_of(produced)}", did_you_mean(es.monitor, produced))


# ------------------------------------------------------------------------------------- optimizer
def optimizer_options(trainer, steps_per_epoch: int) -> dict:
    """Keyword arguments for the Keras optimizer: the learning rate (or schedule) and clipping."""
    from scaleflow.training.schedules import make_schedule

    options: dict[str, Any] = {"learning_rate": make_schedule(trainer, steps_per_epoch)}
    if trainer.clip_norm is not None:
        options["global_clipnorm"] = float(trainer.clip_norm)  # over all gradients, as Lightning/PyTorch do
    if trainer.clip_value is not None:
        options["clipvalue"] = float(trainer.clip_value)
    return options


# ----------------------------------------------------------------------- early stopping, keep_best
@dataclasses.dataclass
class ControlState:
    """What the controls know after `epochs_completed` epochs."""

    epochs_completed: int = 0
    best: float | None = None
    best_epoch: int | None = None  # 1-based
    wait: int = 0  # epochs since the last improvement
    stopped_epoch: int | None = None  # 1-based epoch after which early stopping ended the run
    best_weights: str | None = None  # file name in the state dir

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _atomic_write(path: str, write) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Controls:
    """Early stopping and best-epoch tracking for one run (one worker), persisted in `directory`.

    Args:
        directory: where state and best weights live (this worker's resume checkpoint dir).
        monitor: the log key judged (e.g. `val_loss`); mode: 'min' or 'max'.
        patience, min_delta: early stopping's; `early_stopping=False` only tracks the best epoch.
        keep_best: keep the best epoch's weights (restored into the model when training ends).
    """

    def __init__(self, directory: str, monitor: str, mode: str, patience: int, min_delta: float,
                 early_stopping: bool, keep_best: bool):
        self.directory, self.monitor, self.mode = directory, monitor, mode
        self.patience, self.min_delta = patience, min_delta
        self.early_stopping, self.keep_best = early_stopping, keep_best
        self.state = ControlState()
        self.restored_epoch: int | None = None  # the epoch whose weights the model ends with

    @classmethod
    def from_config(cls, cfg, directory: str, task) -> "Controls | None":
        t = cfg.trainer
        es = t.early_stopping
        if not (es.enabled or t.keep_best):
            return None
        mode = es.mode if es.mode != "auto" else task.monitor_mode(es.monitor)
        return cls(directory, es.monitor, mode, es.patience, es.min_delta, bool(es.enabled), bool(t.keep_best))

    # ------------------------------------------------------------------------------- persistence
    def _states(self) -> dict[str, dict]:
        try:
            with open(os.path.join(self.directory, STATE_FILE)) as f:
                return json.load(f)["epochs"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def resume(self, initial_epoch: int) -> None:
        """Load the state of epoch `initial_epoch` (the one the resume checkpoint holds)."""
        if not initial_epoch:
            return
        saved = self._states().get(str(initial_epoch))
        if saved is None:
            log.warning("no early-stopping/keep_best state for epoch %d in %s: counting from here",
                        initial_epoch, self.directory)
            self.state = ControlState(epochs_completed=initial_epoch)
            return
        self.state = ControlState(**saved)
        log.info("training controls resumed at epoch %d: best %s=%s at epoch %s, %d epoch(s) without improvement",
                 initial_epoch, self.monitor, self.state.best, self.state.best_epoch, self.state.wait)

    def _save(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        states = self._states()
        states[str(self.state.epochs_completed)] = self.state.to_json()
        kept = sorted(states, key=int)[-KEEP_STATES:]
        states = {k: states[k] for k in kept}
        _atomic_write(os.path.join(self.directory, STATE_FILE),
                      lambda f: f.write(json.dumps({"monitor": self.monitor, "mode": self.mode,
                                                    "epochs": states}, indent=1).encode()))
        referenced = {s.get("best_weights") for s in states.values()}
        for path in glob.glob(os.path.join(self.directory, "best-*.npz")):
            if os.path.basename(path) not in referenced:
                os.remove(path)

    # ------------------------------------------------------------------------------------ logic
    def improved(self, value: float) -> bool:
        if self.state.best is None:
            return True
        if self.mode == "min":
            return value < self.state.best - self.min_delta
        return value > self.state.best + self.min_delta

    def end_epoch(self, epoch: int, logs: dict, weights) -> bool:
        """Record epoch `epoch` (0-based); returns True when the run should stop. `weights()` gives the
        model's weights (called only when they must be saved)."""
        if self.monitor not in logs:
            from scaleflow.errors import ScaleflowError

            raise ScaleflowError(f"trainer.early_stopping.monitor={self.monitor}: the run logged only "
                                 f"{', '.join(sorted(logs))}")
        value = float(logs[self.monitor])
        s = self.state
        s.epochs_completed = epoch + 1
        if self.improved(value):
            s.best, s.best_epoch, s.wait = value, epoch + 1, 0
            if self.keep_best:
                name = f"best-{epoch + 1}.npz"
                arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(weights())}
                _atomic_write(os.path.join(self.directory, name), lambda f: np.savez(f, **arrays))
                s.best_weights = name
        else:
            s.wait += 1
        stop = self.early_stopping and s.wait >= self.patience
        if stop:
            s.stopped_epoch = epoch + 1
        self._save()
        return stop

    def best_weights(self) -> list[np.ndarray] | None:
        if not (self.keep_best and self.state.best_weights):
            return None
        with np.load(os.path.join(self.directory, self.state.best_weights)) as archive:
            return [archive[f"w{i}"] for i in range(len(archive.files))]

    @property
    def already_stopped(self) -> bool:
        return self.state.stopped_epoch is not None

    def summary(self) -> dict:
        """run.json's `training_controls`."""
        return {"monitor": self.monitor, "mode": self.mode, "early_stopping": self.early_stopping,
                "patience": self.patience, "min_delta": self.min_delta, "keep_best": self.keep_best,
                "best": self.state.best, "best_epoch": self.state.best_epoch,
                "stopped_epoch": self.state.stopped_epoch, "epochs_completed": self.state.epochs_completed,
                "exported_epoch": self.restored_epoch or self.state.epochs_completed}

    def callback(self):
        """The Keras callback; list it before BackupAndRestore (see the module docstring)."""
        import keras

        controls = self

        class TrainingControls(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if controls.end_epoch(epoch, logs or {}, self.model.get_weights):
                    log.info("early stopping after epoch %d: %s has not improved on %.6g (epoch %d) for %d "
                             "epoch(s)", epoch + 1, controls.monitor, controls.state.best,
                             controls.state.best_epoch, controls.state.wait)
                    self.model.stop_training = True

            def on_train_end(self, logs=None):
                # Before BackupAndRestore deletes the directory holding the best weights.
                best = controls.best_weights()
                if best is not None:
                    self.model.set_weights(best)
                    controls.restored_epoch = controls.state.best_epoch
                    log.info("keep_best: the model now holds epoch %d's weights (%s %.6g)",
                             controls.state.best_epoch, controls.monitor, controls.state.best)

        return TrainingControls()
