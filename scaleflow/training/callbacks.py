"""Keras callbacks the run always uses: TensorBoard (with optional profiling) and a one-line log."""

from __future__ import annotations

import logging

from scaleflow.profiling.logdir import tensorboard_dir

log = logging.getLogger("scaleflow")


def tensorboard_callback(cfg, run_dir: str, distribution):
    """Scalars per epoch. Profiling is scaleflow's own (scaleflow/profiling/): Keras' profile_batch
    leaves TensorBoard's Overview without a step marker."""
    import keras

    return keras.callbacks.TensorBoard(log_dir=tensorboard_dir(run_dir, distribution), update_freq="epoch",
                                       profile_batch=0, write_graph=False)


def epoch_logger(epochs: int, throughput):
    import keras

    class EpochLine(keras.callbacks.Callback):
        """One concise line per epoch: metrics, examples/s and seconds."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate")
            last = throughput.epochs[-1] if throughput.epochs else {}
            speed = f"  {last['examples_per_sec']:,.0f} ex/s  {last['seconds']:.2f}s" if last else ""
            log.info("epoch %d/%d  %s%s", epoch + 1, epochs, metrics, speed)

    return EpochLine()


def manifest_history(manifest, initial_epoch: int):
    """Writes metrics to run.json after every epoch, so an interrupted run keeps its history and a
    resumed run reports every epoch, including those before the interruption."""
    import keras

    previous = ((manifest.previous or {}).get("metrics") or {}).get("history") or {}
    history = {k: list(v)[:initial_epoch] for k, v in previous.items()} if initial_epoch else {}

    class ManifestHistory(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if history:  # resumed: the earlier epochs' metrics are this run's too, from the start
                final = {k: v[-1] for k, v in history.items() if v}
                manifest.update(metrics={"final": final, "history": history}, epochs_completed=initial_epoch)

        def on_epoch_end(self, epoch, logs=None):
            final = {k: float(v) for k, v in (logs or {}).items()}
            for k, v in final.items():
                history.setdefault(k, []).append(v)
            manifest.update(metrics={"final": final, "history": history}, epochs_completed=epoch + 1)

    return ManifestHistory()
