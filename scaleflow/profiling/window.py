"""profile=tensorboard: a profiled window TensorBoard's Overview page can read.

Keras 3 marks profiled batches with `Trace("Profiled batch")`, which the profiler does not take as a
step ("No step marker observed"), and with steps_per_execution > 1 no marker can work: the steps run
inside one tf.while_loop (measured with xprof 2.24 on Keras 3.15; upstream xprof#571,
tensorboard#6210). So for the calls that overlap the window, `model.train_function` is wrapped to
run one compiled step per item drawn (keras_steps.StepDraws), each window step inside
`Trace("train", step_num=n, _r=1)`, the root step marker tf-keras used; the profiler runs from the
window's first step to its last. Every other call goes straight to Keras' multi-step function: the
window costs what one step per call costs for those steps, and nothing after (`profile` block in
run.json: window_seconds vs full-speed steps).

Steps are 1-based within the first epoch this attempt trains. Keras gives each call
steps_per_execution steps, so every step of the calls that overlap the window (and of the call holding
the step just before it, which compiles the one-step function before the profiler starts) runs one per
call; the profiler and the step markers cover only the window.
"""

from __future__ import annotations

import logging
import os
import time

from scaleflow.profiling import keras_steps
from scaleflow.profiling.logdir import profile_dir

log = logging.getLogger("scaleflow")


class ProfiledWindow:
    """Callback factory: `ProfiledWindow.create(cfg, run_dir, distribution, manifest, steps_per_epoch)`.

    Example:
        python -m scaleflow profile=tensorboard profile.batches=[10,20]
        tensorboard --logdir outputs/   # Profile > Overview: step time and its breakdown
    """

    @classmethod
    def create(cls, cfg, run_dir: str, distribution, manifest, steps_per_epoch: int, initial_epoch: int = 0):
        import keras
        import tensorflow as tf

        from scaleflow.profiling.checks import check_window

        start, stop = (int(b) for b in cfg.profile.batches)
        check_window((start, stop), steps_per_epoch, "the planned epoch")
        logdir = profile_dir(run_dir, distribution)
        marked = keras_steps.supported("profile=tensorboard's step markers")
        first, last = start - 1, stop - 1  # 0-based steps of the window
        one_step_from = max(0, first - 1)  # one warm-up step compiles the one-step function first

        class _ProfiledWindow(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.report: dict = {"mode": "tensorboard", "batches": [start, stop], "dir": logdir,
                                     "step_markers": marked}
                self._epoch = None
                self._call_step = 0
                self._keras_function = None
                self._window_s = 0.0
                self._window_steps = 0
                self._profiler_s = 0.0
                self._fast_s, self._fast_steps, self._fast_calls = 0.0, 0, 0
                self._profiling = False
                self._done = False
                self._wrapped = self._wrapper  # one bound method: `is` tells whether it is installed

            # fit's loop: on_train_batch_begin(first step of the call) -> train_function -> ..._end
            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                # Every call is wrapped (timed: the full-speed step time the window's cost is measured
                # against); only the first trained epoch's calls that overlap the window change.
                self._call_step = batch
                if self.model.train_function is self._wrapped:
                    return
                self._keras_function = self.model.train_function
                self.model.train_function = self._wrapped  # put back in on_train_batch_end

            def on_train_batch_end(self, batch, logs=None):
                if self._keras_function is not None and self.model.train_function is self._wrapped:
                    self.model.train_function = self._keras_function

            def _wrapper(self, iterator):
                keras_function = self._keras_function
                call_first = self._call_step
                call_last = call_first + self.model.steps_per_execution - 1
                began = time.perf_counter()
                overlaps = self._epoch == initial_epoch and not self._done and \
                    call_last >= one_step_from and call_first <= last
                if not overlaps or not marked:
                    if overlaps and call_first <= first <= call_last:  # unmarked fallback: whole calls traced
                        self._start_profiler()
                    outputs = keras_function(iterator)
                    if self._profiling and call_last >= last:
                        self._stop_profiler()
                    if not overlaps:
                        self._count_fast(time.perf_counter() - began, call_last - call_first + 1)
                    return outputs
                draws = keras_steps.StepDraws(iterator, call_first, self._step_begins, self._step_ends)
                outputs = keras_steps.run_drawn(keras_function, draws)
                self._one_step_s += time.perf_counter() - began - self._profiler_s_in_call
                self._one_step_steps += draws.drawn
                self._profiler_s_in_call = 0.0
                return outputs

            _profiler_s_in_call = 0.0
            _one_step_s = 0.0
            _one_step_steps = 0
            _step_began = None
            _profiler_s_in_call = 0.0
            _trace = None

            def _step_begins(self, step):
                if step == first:
                    self._start_profiler()
                if first <= step <= last:
                    if self._profiling:
                        self._trace = tf.profiler.experimental.Trace("train", step_num=step + 1, _r=1)
                        self._trace.__enter__()
                    self._step_began = time.perf_counter()

            def _step_ends(self, step):
                if self._step_began is not None:
                    self._window_s += time.perf_counter() - self._step_began
                    self._window_steps += 1
                    self._step_began = None
                if self._trace is not None:
                    self._trace.__exit__(None, None, None)
                    self._trace = None
                if step == last:
                    self._stop_profiler()

            def _start_profiler(self):
                began = time.perf_counter()
                try:
                    tf.profiler.experimental.start(logdir)
                    self._profiling = True
                except Exception as e:  # another profiler session (e.g. "Capture profile") is running
                    log.warning("profile=tensorboard: the profiler did not start (%s); steps %d-%d are not traced",
                                str(e).splitlines()[0], start, stop)
                    self.report["error"] = str(e).splitlines()[0]
                took = time.perf_counter() - began
                self._profiler_s += took
                self._profiler_s_in_call += took

            def _stop_profiler(self):
                self._done = True
                if not self._profiling:
                    return
                began = time.perf_counter()
                tf.profiler.experimental.stop()
                self._profiling = False
                took = time.perf_counter() - began
                self._profiler_s += took
                self._profiler_s_in_call += took
                log.info("profile: steps %d-%d traced one step per call with step markers, written to %s "
                         "(TensorBoard: Profile tab)", start, stop, logdir)

            def _count_fast(self, seconds, steps):
                self._fast_calls += 1
                if self._fast_calls > 1:  # the first call compiles the multi-step function
                    self._fast_s += seconds
                    self._fast_steps += steps

            def on_train_end(self, logs=None):
                if self._profiling:  # training ended inside the window (early stop, signal)
                    self._stop_profiler()
                if self._keras_function is not None and self.model.train_function is self._wrapped:
                    self.model.train_function = self._keras_function
                self.report.update(self.summary())
                if manifest is not None:
                    manifest.update(profile=self.report)

            def summary(self) -> dict:
                window_step = self._window_s / self._window_steps if self._window_steps else None
                fast_step = self._fast_s / self._fast_steps if self._fast_steps else None
                cost = None
                if self._one_step_steps and fast_step is not None:  # one step per call vs full speed
                    cost = round(self._one_step_s - self._one_step_steps * fast_step, 4)
                return {"window_steps": self._window_steps, "window_seconds": round(self._window_s, 4),
                        "window_step_time_s": window_step, "full_speed_step_time_s": fast_step,
                        # every step of the calls overlapping the window ran one per call (the first
                        # compiles the one-step function): what that cost beside full speed
                        "one_per_call_steps": self._one_step_steps,
                        "one_per_call_seconds": round(self._one_step_s, 4),
                        "window_cost_s": cost, "profiler_start_stop_s": round(self._profiler_s, 4),
                        "steps_per_execution": self.model.steps_per_execution if self.model else None}

        return _ProfiledWindow()
