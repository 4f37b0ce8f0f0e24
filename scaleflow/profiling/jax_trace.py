"""profile=tensorboard on the JAX backend (strategy=model_parallel|hybrid): the JAX profiler's trace.

TensorFlow's profiler sees nothing of a JAX step, so the window [start, stop] is traced with
`jax.profiler.start_trace(dir)`, which writes `plugins/profile/<run>/<host>.xplane.pb` where
TensorBoard's Profile tab reads it (the same `tensorboard/train` dir as TensorFlow runs). Each call of
the training function runs inside `StepTraceAnnotation("train", step_num=n)`, JAX's step marker, so
the profile has steps; with steps_per_execution > 1 one marked step is one call of that many steps.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("scaleflow")


class JaxTraceWindow:
    """Callback factory: `JaxTraceWindow.create(cfg, run_dir, distribution, manifest, steps_per_epoch)`.

    Example:
        python -m scaleflow strategy=model_parallel hardware.logical_devices=2 profile=tensorboard
    """

    @classmethod
    def create(cls, cfg, run_dir: str, distribution, manifest, steps_per_epoch: int, initial_epoch: int = 0):
        import jax
        import keras

        from scaleflow.profiling.checks import check_window
        from scaleflow.profiling.logdir import profile_dir

        start, stop = (int(b) for b in cfg.profile.batches)
        check_window((start, stop), steps_per_epoch, "the planned epoch")
        logdir = profile_dir(run_dir, distribution)

        class _JaxTraceWindow(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.report: dict = {"mode": "tensorboard", "profiler": "jax", "batches": [start, stop], "dir": logdir}
                self._epoch, self._tracing, self._done, self._marker = None, False, False, None
                self._began, self._steps = 0.0, 0

            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                # `batch` is the call's first step (0-based); the call runs steps_per_execution steps.
                last_step = batch + self.model.steps_per_execution
                if self._epoch == initial_epoch and not self._done and not self._tracing and last_step >= start:
                    try:
                        jax.profiler.start_trace(logdir)
                        self._tracing, self._began = True, time.perf_counter()
                    except Exception as e:  # noqa: BLE001 - another trace is running: no profile, no failure
                        self.report["error"] = str(e).splitlines()[0]
                        self._done = True
                if self._tracing:
                    self._marker = jax.profiler.StepTraceAnnotation("train", step_num=batch + 1)
                    self._marker.__enter__()

            def on_train_batch_end(self, batch, logs=None):
                if self._marker is not None:
                    self._marker.__exit__(None, None, None)
                    self._marker = None
                    self._steps += self.model.steps_per_execution
                if self._tracing and batch + 1 >= stop:
                    self._stop()

            def _stop(self):
                jax.effects_barrier()  # the traced steps' device work is in the trace
                jax.profiler.stop_trace()
                self._tracing, self._done = False, True
                self.report.update(window_steps=self._steps, window_seconds=round(time.perf_counter() - self._began, 4))
                log.info("profile: steps %d-%d traced by the JAX profiler, written to %s (TensorBoard: Profile tab)",
                         start, stop, logdir)

            def on_train_end(self, logs=None):
                if self._tracing:  # training ended inside the window (early stop, signal)
                    self._stop()
                if manifest is not None:
                    manifest.update(profile=self.report)

        return _JaxTraceWindow()
