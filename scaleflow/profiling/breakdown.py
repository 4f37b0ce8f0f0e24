"""profile=summary: where the step goes, measured from the run itself.

Most calls run at full speed (Keras' multi-step function) and are only timed. One call in every
`profile.sample_every` (and the middle call of the first epoch, so every run has a verdict) runs its
steps one per call through keras_steps.StepDraws, which times each step's input fetch apart from the
step itself: time blocked in the input pipeline vs time in the compiled step. A Python fetch of data
that is already there costs ~0.1-0.3 ms; that overhead (measured once on a ready dataset through the
same strategy) is not counted as waiting. Per epoch it writes
TensorBoard scalars (`profile/...` in the `train` run), at the end a `profile` block in run.json and one
verdict line in the log.

At the end it also splits the full-speed step into its parts (`step_parts`, issue 14), each measured
in this process after training, with its thread settings:
  compute     one forward + backward pass of this replica's batch (a copy of the model, no strategy)
  all-reduce  the strategy's all-reduce of this model's gradients, as the training step packs them,
              between the job's real processes (`Distribution.collective_seconds(model)`; strategies
              without collectives between processes report none)
  input       the sampled wait for the next batch (above)
  overhead    what is left of the full-speed step: the optimizer update, dispatch, metric updates and
              their reductions, collective launch costs beyond the transfer, threads competing for cores
"""

from __future__ import annotations

import logging
import math
import os
import time

from scaleflow.profiling import keras_steps
from scaleflow.profiling.logdir import profile_dir

log = logging.getLogger("scaleflow")

INPUT_BOUND = 0.5  # at least this share of step time waiting for data: input-bound
PARTLY_INPUT_BOUND = 0.15


def verdict(input_fraction: float | None) -> str:
    """The one-line answer to "where does my step go"."""
    if input_fraction is None:
        return "no step was sampled (profile.sample_every larger than the run's calls)"
    share = f"{input_fraction:.0%} of step time waiting for data"
    if input_fraction >= INPUT_BOUND:
        return f"input-bound: {share}; try data.cache or more parallel reads"
    if input_fraction >= PARTLY_INPUT_BOUND:
        return f"partly input-bound: {share}; data.cache or more parallel reads would help"
    return f"compute-bound: {share}; the step itself (model, batch size, steps_per_execution) is the cost"


class StepBreakdown:
    """Callback factory: `StepBreakdown.create(cfg, run_dir, distribution, manifest, steps_per_epoch)`.

    Example:
        python -m scaleflow profile=summary
        # log: profile: compute-bound: 3% of step time waiting for data; ...
    """

    @classmethod
    def create(cls, cfg, run_dir: str, distribution, manifest, steps_per_epoch: int):
        import keras
        import tensorflow as tf

        every = int(cfg.profile.sample_every)
        on = keras_steps.supported("profile=summary's input/step breakdown")
        logdir = profile_dir(run_dir, distribution)
        collectives = getattr(distribution, "collective_seconds", None)  # a strategy that measures them

        class _StepBreakdown(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.epochs: list[dict] = []
                self._wrapped = self._wrapper
                self._keras_function = None
                self._calls = 0  # calls of the whole run
                self._sampled_once = False
                self._writer = None

            def on_train_begin(self, logs=None):
                spe = self.model.steps_per_execution
                self._calls_per_epoch = max(1, math.ceil(steps_per_epoch / spe))
                self._writer = tf.summary.create_file_writer(logdir)
                if on:
                    self._keras_function = self.model.train_function
                    self.model.train_function = self._wrapped

            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = {"epoch": epoch + 1, "full_speed_s": 0.0, "full_speed_steps": 0,
                               "sampled_steps": 0, "wait_s": 0.0, "step_s": 0.0}
                self._epoch_call = 0

            def _sample_this_call(self) -> bool:
                if self._calls % every == every // 2:
                    return True
                # a run shorter than `every` calls still gets one sample, mid-way through its first epoch
                return not self._sampled_once and self._epoch_call == self._calls_per_epoch // 2

            def _wrapper(self, iterator):
                sampled = self._sample_this_call()
                self._calls += 1
                self._epoch_call += 1
                e = self._epoch
                if not sampled:
                    began = time.perf_counter()
                    outputs = self._keras_function(iterator)
                    if self._full_speed_compiled:  # the first full-speed call compiles the multi-step function
                        e["full_speed_s"] += time.perf_counter() - began
                        e["full_speed_steps"] += self.model.steps_per_execution
                    self._full_speed_compiled = True
                    return outputs
                self._sampled_once = True
                times: dict[int, float] = {}

                def begins(step):
                    times[step] = time.perf_counter()

                def ends(step):
                    times[step] = time.perf_counter() - times[step]

                draws = keras_steps.StepDraws(iterator, 0, begins, ends)
                outputs = keras_steps.run_drawn(self._keras_function, draws)
                if self._fetch_overhead is None:
                    self._fetch_overhead = _ready_fetch_seconds(self.model.distribute_strategy)
                for step, wait in enumerate(draws.waits):
                    if not getattr(self, "_one_step_compiled", False):
                        self._one_step_compiled = True  # the first one-step call compiles it: not a step time
                        continue
                    total = times.get(step, wait)
                    # what a fetch of data that is already there costs from Python is not waiting
                    waited = max(0.0, wait - self._fetch_overhead)
                    e["sampled_steps"] += 1
                    e["wait_s"] += waited
                    e["step_s"] += max(0.0, total - waited)
                return outputs

            _fetch_overhead = None
            _full_speed_compiled = False  # a sampled first call leaves the compile to a later one

            def on_epoch_end(self, epoch, logs=None):
                e = self._epoch
                e["step_time_s"] = e["full_speed_s"] / e["full_speed_steps"] if e["full_speed_steps"] else None
                e["input_fraction"] = _fraction(e["wait_s"], e["step_s"])
                self.epochs.append(e)
                with self._writer.as_default(step=epoch):
                    if e["step_time_s"] is not None:
                        tf.summary.scalar("profile/step_time_ms", e["step_time_s"] * 1e3)
                    if e["sampled_steps"]:
                        tf.summary.scalar("profile/input_wait_fraction", e["input_fraction"])
                        tf.summary.scalar("profile/input_wait_ms", e["wait_s"] / e["sampled_steps"] * 1e3)
                        tf.summary.scalar("profile/step_compute_ms", e["step_s"] / e["sampled_steps"] * 1e3)
                self._writer.flush()

            def on_train_end(self, logs=None):
                if self._keras_function is not None and self.model.train_function is self._wrapped:
                    self.model.train_function = self._keras_function
                self._parts = _measure_parts(self.model, cfg.data.batch_size / max(1, distribution.num_replicas),
                                             collectives) if on else {}
                if self._writer is not None:
                    self._writer.close()
                report = self.summary()
                log.info("profile: %s", report["verdict"])
                if manifest is not None:
                    manifest.update(profile=report)

            def summary(self) -> dict:
                sampled = sum(e["sampled_steps"] for e in self.epochs)
                wait = sum(e["wait_s"] for e in self.epochs)
                step = sum(e["step_s"] for e in self.epochs)
                fast_steps = sum(e["full_speed_steps"] for e in self.epochs)
                fraction = _fraction(wait, step) if on else None
                full_speed = sum(e["full_speed_s"] for e in self.epochs) / fast_steps if fast_steps else None
                parts = dict(getattr(self, "_parts", {}))
                if parts.get("compute_s") is not None:
                    parts["input_s"] = wait / sampled if sampled else 0.0
                    parts["step_s"] = full_speed  # None when every call was sampled: no overhead then
                    parts["overhead_s"] = max(0.0, full_speed - parts["compute_s"] - (parts.get("allreduce_s") or 0.0)
                                              - parts["input_s"]) if full_speed else None
                return {
                    "mode": "summary", "measured": on, "sample_every": every, "sampled_steps": sampled,
                    "input_wait_fraction": fraction,
                    "input_wait_s_per_step": wait / sampled if sampled else None,
                    "step_compute_s_per_step": step / sampled if sampled else None,
                    "full_speed_step_time_s": sum(e["full_speed_s"] for e in self.epochs) / fast_steps
                    if fast_steps else None,
                    "ready_fetch_overhead_s": self._fetch_overhead,
                    "collectives_s": parts.get("allreduce_s"),
                    "step_parts": parts,
                    "collectives": "measured by the strategy" if callable(collectives)
                    else f"not reported by strategy {distribution.name}",
                    "verdict": verdict(fraction) if on else "off: Keras version not measured",
                    "per_epoch": [{k: e[k] for k in ("epoch", "sampled_steps", "input_fraction", "step_time_s")}
                                  for e in self.epochs],
                    "tensorboard": logdir,
                }

        return _StepBreakdown()


def _fraction(wait: float, step: float) -> float | None:
    return wait / (wait + step) if wait + step > 0 else None


def _ready_fetch_seconds(strategy, draws: int = 30) -> float:
    """Median time of fetching an element that is already prefetched, from Python, through the same
    strategy's distributed iterator: the part of a sampled fetch that is overhead, not waiting (on a
    ~1 ms step it would otherwise read as ~30% input wait)."""
    import statistics

    import tensorflow as tf

    ready = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.from_tensors(tf.zeros([1, 1])).repeat().prefetch(4))
    iterator = iter(ready)
    next(iterator)
    times = []
    for _ in range(draws):
        began = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _measure_parts(model, per_replica_batch: float, collectives) -> dict:
    """{compute_s, allreduce_s}: one forward + backward pass of a replica's batch, and the strategy's
    all-reduce of this model's gradients (None without collectives between processes). Never fails
    the run: what cannot be measured is None, with why."""
    out: dict = {"compute_s": None, "allreduce_s": None}
    try:
        out["compute_s"] = _compute_seconds(model, max(1, int(per_replica_batch)))
    except Exception as e:  # noqa: BLE001 - a measurement must never fail a finished run
        out["compute_error"] = f"{type(e).__name__}: {e}"
    if callable(collectives):
        try:
            out["allreduce_s"] = collectives(model)
        except Exception as e:  # noqa: BLE001
            out["allreduce_error"] = f"{type(e).__name__}: {e}"
    return out


def _compute_seconds(model, batch: int, repeats: int = 10) -> float:
    """Median time of one forward + backward pass of `batch` examples through a copy of `model` (its
    own variables, outside any strategy), in this process with its thread settings."""
    import statistics

    import keras
    import tensorflow as tf

    if len(model.inputs) != 1:
        raise ValueError("only single-input models are measured")
    # A copy from the architecture alone (clone_model would also rebuild the compiled optimizer,
    # which a strategy may have wrapped in a class Keras cannot deserialise).
    clone = type(model).from_config(model.get_config())
    x = tf.random.normal([batch, *model.inputs[0].shape[1:]])

    @tf.function(jit_compile=False)
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(clone(x, training=True), tf.float32))
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, clone.trainable_variables)])

    forward_backward().numpy()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        forward_backward().numpy()
        times.append(time.perf_counter() - began)
    return statistics.median(times)
