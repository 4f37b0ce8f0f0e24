"""Learning-rate schedules (`trainer.lr_schedule`): constant, cosine, exponential or step decay, each
after an optional linear warmup.

The schedule is a function of the optimizer's step counter, which the resume checkpoint restores, so a
resumed run continues the schedule exactly where the interrupted one stopped. Epoch-denominated
settings (`warmup_epochs`, `decay_epochs`) become steps with the run's steps per epoch.

Example:

    python -m scaleflow trainer.lr_schedule.name=cosine trainer.lr_schedule.warmup_epochs=1
    python -m scaleflow trainer.lr_schedule.name=step trainer.lr_schedule.decay_epochs=10 \\
        trainer.lr_schedule.decay_rate=0.1
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "exponential", "step")


def learning_rate_at(step: float, base: float, name: str, warmup_steps: int, total_steps: int, decay_steps: float,
                     decay_rate: float, min_lr: float) -> float:
    """The learning rate at optimizer step `step` (0-based), in plain Python: the specification the
    Keras schedule below follows, and what tests compare it with."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    after = step - warmup_steps
    if name == "cosine":
        progress = min(1.0, after / max(1, total_steps - warmup_steps))
        return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "exponential":
        return base * decay_rate ** (after / decay_steps)
    if name == "step":
        return base * decay_rate ** math.floor(after / decay_steps)
    return base


def make_schedule(trainer, steps_per_epoch: int):
    """A Keras LearningRateSchedule for `trainer.lr_schedule`, or the plain float learning rate when
    the schedule is constant without warmup (the optimizer then behaves exactly as before)."""
    import keras
    from keras import ops

    s = trainer.lr_schedule
    warmup = int(round(s.warmup_epochs * steps_per_epoch))
    if s.name == "constant" and warmup == 0:
        return trainer.learning_rate
    settings = dict(base=float(trainer.learning_rate), name=s.name, warmup_steps=warmup,
                    total_steps=int(trainer.epochs * steps_per_epoch),
                    decay_steps=max(1.0, float(s.decay_epochs) * steps_per_epoch), decay_rate=float(s.decay_rate),
                    min_lr=float(s.min_lr))

    class WarmupThen(keras.optimizers.schedules.LearningRateSchedule):
        """Linear warmup to `base`, then the named decay (see `learning_rate_at`)."""

        def __init__(self, **config):
            self.config = config

        def __call__(self, step):
            c = self.config
            step = ops.cast(step, "float32")
            base = c["base"]
            after = ops.maximum(step - c["warmup_steps"], 0.0)
            if c["name"] == "cosine":
                progress = ops.minimum(1.0, after / max(1, c["total_steps"] - c["warmup_steps"]))
                decayed = c["min_lr"] + (base - c["min_lr"]) * 0.5 * (1.0 + ops.cos(math.pi * progress))
            elif c["name"] == "exponential":
                decayed = base * ops.power(c["decay_rate"], after / c["decay_steps"])
            elif c["name"] == "step":
                decayed = base * ops.power(c["decay_rate"], ops.floor(after / c["decay_steps"]))
            else:
                decayed = ops.convert_to_tensor(base, "float32")
            if not c["warmup_steps"]:
                return decayed
            warming = base * (step + 1.0) / c["warmup_steps"]
            return ops.where(step < c["warmup_steps"], warming, decayed)

        def get_config(self):
            return dict(self.config)

    return WarmupThen(**settings)
