"""A linear model: the smallest possible scaleflow model plugin (the task's head on the raw features)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaleflow.config.schema import ModelConfig
from scaleflow.models.base import InputSpec, Model


@dataclass
class LinearConfig(ModelConfig):
    use_bias: bool = True


class Linear(Model):
    """The task's head directly on the flattened input: softmax regression for task=classification,
    logistic regression for task=binary, linear regression for task=regression.

    Example: `python -m scaleflow model=linear data=moons`
    """

    name = "linear"
    Config = LinearConfig
    conf = "pkg://scaleflow_example.conf"

    def build_body(self, config, spec: InputSpec):
        import keras

        inputs = keras.Input(spec.input_shape, name="features")
        x = keras.layers.Flatten()(inputs) if len(spec.input_shape) > 1 else inputs
        return keras.Model(inputs, x, name="linear")  # the task adds the head

    def num_parameters(self, config, spec: InputSpec) -> int:
        return math.prod(spec.input_shape) * spec.num_classes + spec.num_classes

    def flops_per_example(self, config, spec: InputSpec) -> float:
        return 2.0 * math.prod(spec.input_shape) * spec.num_classes
