"""The callback extension point: extra Keras callbacks a run adds by name (`trainer.callbacks=[name]`).

Example:

    class LearningRateLog(Callback):
        name = "lr_log"

        @classmethod
        def create(cls, cfg, run_dir, distribution, global_batch, steps_per_epoch):
            import keras

            class Log(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    print(epoch, float(self.model.optimizer.learning_rate))

            return Log()

    # pyproject.toml:  [project.entry-points."scaleflow.callbacks"]  lr_log = "my_pkg.lr:LearningRateLog"
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar


class Callback(abc.ABC):
    """Base class of every registered callback (built-in or plugin).

    Class attributes:
        name: the name `trainer.callbacks` lists, equal to the entry point's name.
    """

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def create(cls, cfg: Any, run_dir: str, distribution: Any, global_batch: int, steps_per_epoch: int) -> Any:
        """The Keras callback for one run; called in every training process.

        Args:
            cfg: the validated config.
            run_dir: the run dir (write only when `distribution.is_chief`).
            distribution: the run's `Distribution` (workers, replicas, chief).
            global_batch: examples per step over all replicas.
            steps_per_epoch: training steps per epoch.
        Returns:
            A `keras.callbacks.Callback`.
        """
