"""Profiling that answers "where does my step go".

    checks.py      config rules (no TensorFlow): profile.batches within the epoch, profile.port
    keras_steps.py the one version-guarded Keras 3.15 detail everything here relies on: a train function
                   called with a plain Python iterator runs one `one_step_on_data` per item it draws
    window.py      profile=tensorboard: the window runs one step per call inside a step marker
                   (`Trace("train", step_num=n, _r=1)`), so TensorBoard's Overview has a step time
    breakdown.py   profile=summary: input wait vs step time, sampled from the run itself
    logdir.py      where TensorBoard's scalars and profiles go: one dir per worker
    server.py      profile.port: TensorFlow's profiler server for TensorBoard's "Capture profile"
    timeline.py    profile.timeline (strategy=horovod): Horovod's own timeline of its collectives
    jax_trace.py   profile=tensorboard on the JAX backend (model_parallel, hybrid): the JAX profiler's trace

`callbacks(...)` is what the training loop adds to fit.
"""

from __future__ import annotations


def callbacks(cfg, run_dir: str, distribution, manifest, steps_per_epoch: int, initial_epoch: int = 0) -> list:
    """The Keras callbacks of `cfg.profile` (none for profile=off without a port). Each writes its
    own `profile` block into run.json (through `manifest`) at the end of training."""
    from scaleflow.profiling import server

    server.start_if_configured(cfg, distribution)  # before fit: "Capture profile" works from step one
    import os

    from scaleflow.profiling.timeline import ENV

    if cfg.profile.get("timeline") and os.environ.get(ENV) and manifest is not None:
        manifest.update(profile_timeline=os.environ[ENV])  # written by Horovod (rank 0, every rank's ops)
    name = cfg.profile.name
    if name == "tensorboard" and distribution.backend == "jax":  # TensorFlow's profiler sees no JAX step
        from scaleflow.profiling.jax_trace import JaxTraceWindow

        return [JaxTraceWindow.create(cfg, run_dir, distribution, manifest, steps_per_epoch, initial_epoch)]
    if name == "tensorboard":
        from scaleflow.profiling.window import ProfiledWindow

        return [ProfiledWindow.create(cfg, run_dir, distribution, manifest, steps_per_epoch, initial_epoch)]
    if name == "summary":
        from scaleflow.profiling.breakdown import StepBreakdown

        return [StepBreakdown.create(cfg, run_dir, distribution, manifest, steps_per_epoch)]
    return []
