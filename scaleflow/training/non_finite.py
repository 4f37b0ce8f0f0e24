"""A non-finite loss ends the run: a diverged model (loss NaN or inf) is never reported `ok`.

`trainer.on_nan=stop` (default): the first training step whose loss is NaN or inf stops the run, and
run.json says `failed` with the epoch and step. `trainer.on_nan=continue` trains on (for those who
know their loss recovers); the non-finite numbers are then stored in run.json as null with a note.

Example:
    python -m scaleflow trainer.optimizer=sgd trainer.learning_rate=10   # fails at the step it diverges
"""

from __future__ import annotations

import math

from scaleflow.errors import ScaleflowError


class NonFiniteLoss(ScaleflowError):
    """The training loss became NaN or inf (exit 1); `at` is {epoch, step}, both counted from 1."""

    def __init__(self, value: float, epoch: int, step: int, steps_per_execution: int):
        self.at = {"epoch": epoch, "step": step}
        where = f"epoch {epoch}, step {step}"
        if steps_per_execution > 1:
            where += f" (checked every {steps_per_execution} steps: trainer.steps_per_execution)"
        super().__init__(f"the training loss became {value} in {where}: the model diverged. Lower "
                         "trainer.learning_rate, check the inputs, or set trainer.on_nan=continue to train on")


def stop_on_non_finite_loss(steps_per_execution: int = 1):
    """A Keras callback raising NonFiniteLoss at the first batch end whose loss is not finite."""
    import keras

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise NonFiniteLoss(float(loss), self.epoch + 1, batch + 1, steps_per_execution)

    return StopOnNonFiniteLoss()
