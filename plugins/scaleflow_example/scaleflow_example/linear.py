"""A linear model: the smallest possible scaleflow model plugin (the task's head on the raw features)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaleflow.config.schema import ModelConfig
from scaleflow.models.base import InputSpec, Model


@dataclass
class LinearConfig(ModelConfig):
    use_bias: bool = True  # a per-output offset beside the weights


class Linear(Model):
    """The task's head directly on the flattened input: softmax regression for task=classification,
    logistic regression for task=binary, linear regression for task=regression.

    Example: `python -m scaleflow model=linear data=moons`
    """

    name = "linear"
    Config = LinearConfig
    conf = "pkg://scaleflow_example.conf"

    def build(self, config, spec: InputSpec):
        """The task's output layer on the flattened input, with a bias only if `model.use_bias`
        (the whole model is the head, so it is built here rather than left to the task)."""
        import keras

        from scaleflow import registry

        task = registry.get("task", spec.task)()
        inputs = keras.Input(spec.input_shape, name="features")
        x = keras.layers.Flatten()(inputs) if len(spec.input_shape) > 1 else inputs
        scores = keras.layers.Dense(spec.num_outputs, activation=task.activation, use_bias=config.use_bias,
                                    dtype="float32", name="scores")(x)  # float32: a stable loss
        return keras.Model(inputs, scores, name="linear")

    def num_parameters(self, config, spec: InputSpec) -> int:
        return math.prod(spec.input_shape) * spec.num_outputs + (spec.num_outputs if config.use_bias else 0)

    def num_gradient_tensors(self, config, spec: InputSpec) -> int:
        return 2 if config.use_bias else 1

    def flops_per_example(self, config, spec: InputSpec) -> float:
        return 2.0 * math.prod(spec.input_shape) * spec.num_classes
