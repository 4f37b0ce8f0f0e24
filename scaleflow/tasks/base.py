"""The task extension point: what a model predicts, how it learns it and what its export returns.

A task decides, for `task=<name>`:
- labels: how a dataset's raw labels become training targets (`encode`, NumPy, no TensorFlow), with
  the class names or target names that travel with the model;
- the head: the output layer added on top of the model plugin's body (`head`);
- the loss and default metrics, and which of Keras' losses and metrics fit (`compile_args`);
- the export: what the serving signature returns besides the scores (`serving_outputs`).

Built-ins register through the `scaleflow.tasks` entry-point group, exactly as a plugin would:

    # pyproject.toml:  [project.entry-points."scaleflow.tasks"]  ordinal = "my_pkg.ordinal:Ordinal"

Example:

    task = registry.get("task", "regression")()
    targets = task.encode(np.array([1.5, 2.0]), data_config)   # Targets(y=(2, 1) float32, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from scaleflow.tasks import keras_names
from scaleflow.tasks.labels import Where, default_where


@dataclass(frozen=True)
class Targets:
    """Training targets and what names them."""

    y: np.ndarray  # what the model trains on: dtype and shape are the task's
    num_classes: int = 0  # classes (labels for multilabel); 0 for regression
    class_names: tuple[str, ...] = ()
    target_names: tuple[str, ...] = ()


class Task:
    name: ClassVar[str]
    activation: ClassVar[str | None] = None  # of the head's Dense layer
    loss: ClassVar[str]  # the default Keras loss
    losses: ClassVar[tuple[str, ...]]  # Keras losses that fit the task's targets and head
    metrics: ClassVar[tuple[str, ...]]  # default metrics (their names are the run's log keys)
    allowed_metrics: ClassVar[tuple[str, ...]]

    # ------------------------------------------------------------------------------- labels (NumPy)
    def encode(self, labels: Any, config, *, key: str = "data.label", where: Where = default_where,
               names: Sequence[str] | None = None, min_classes: int = 0) -> Targets:
        """Raw labels (as a dataset holds them) -> Targets. `names`: the dataset's names for label
        columns (e.g. a CSV's target columns); `where(i)`: how to name record i in an error."""
        raise NotImplementedError

    def num_outputs(self, info) -> int:
        """Width of the head for data described by `info` (a DataInfo)."""
        return info.num_classes

    def input_spec(self, info):
        from scaleflow.models.base import InputSpec

        return InputSpec(tuple(info.input_shape), self.num_outputs(info), task=self.name)

    def tf_targets(self, label: Any) -> Any:
        """A file-backed dataset's label tensor (one record) -> the target tensor the loss expects."""
        return label

    # ---------------------------------------------------------------------------------- the model
    def head(self, x: Any, units: int) -> Any:
        """The output layer: float32 even under mixed precision, for a stable loss and exact export."""
        import keras

        return keras.layers.Dense(units, activation=self.activation, dtype="float32", name="scores")(x)

    def build_model(self, plugin, config, spec) -> Any:
        """The model to train: the plugin's body with this task's head. A legacy plugin whose `build`
        returns the whole model is used as it is (its `classifier_head` call already asks the task)."""
        import keras

        from scaleflow.errors import ScaleflowError
        from scaleflow.models.base import Model

        if type(plugin).build_body is not Model.build_body:
            body = plugin.build_body(config, spec)
            features = body.outputs[0]
            inputs = body.inputs[0] if len(body.inputs) == 1 else body.inputs  # keep a single input unwrapped
            return keras.Model(inputs, self.head(features, spec.num_outputs), name=body.name)
        if type(plugin).build is Model.build:
            raise NotImplementedError(f"model={plugin.name}: implement build_body (see scaleflow/models/base.py)")
        model = plugin.build(config, spec)
        width = model.outputs[0].shape[-1]
        if width != spec.num_outputs:
            raise ScaleflowError(f"model={plugin.name} returns {width} outputs but task={self.name} needs "
                                 f"{spec.num_outputs}: give the plugin a build_body (see docs/plugins.md)")
        return model

    # ---------------------------------------------------------------------------- loss and metrics
    def loss_name(self, trainer) -> str:
        return trainer.get("loss") or self.loss

    def metric_names(self, trainer) -> list[str]:
        """The metrics the run reports (its log keys, besides `loss`), without TensorFlow."""
        chosen = trainer.get("metrics")
        return list(self.metrics if chosen is None else chosen)

    def compile_args(self, trainer, spec) -> tuple[Any, list]:
        """(loss, metrics) objects for `model.compile`; every metric is named as configured, so the
        names `trainer.early_stopping.monitor` checks before TensorFlow are the names Keras logs."""
        import keras

        loss = keras.losses.get(self.loss_name(trainer))
        return loss, [self.metric(name, spec) for name in self.metric_names(trainer)]

    def metric(self, name: str, spec) -> Any:
        import keras

        found = keras.metrics.get(name)
        if isinstance(found, type):
            return found(name=name)
        return keras.metrics.MeanMetricWrapper(found, name=name)

    @staticmethod
    def monitor_mode(metric: str) -> str:
        """'max' for metrics where higher is better, else 'min' (what mode=auto means)."""
        base = metric.removeprefix("val_")
        return "max" if base in keras_names.HIGHER_IS_BETTER else "min"

    # ---------------------------------------------------------------------------------- the export
    def serving_outputs(self, scores: Any, class_names: Sequence[str], target_names: Sequence[str]) -> dict:
        """Named outputs of the serving signature, computed from the head's output `scores`."""
        return {"scores": scores}

    def metadata(self, info) -> dict:
        """What the export's metadata (and run.json) records about the labels."""
        return {"task": self.name, "class_names": list(info.class_names), "target_names": list(info.target_names)}
