"""The model extension point.

A model plugin is a class with a `name`, a `Config` dataclass (extending `ModelConfig`) and `build`.
Import TensorFlow/Keras inside `build`, never at module level.

Example:

    @dataclass
    class TinyConfig(ModelConfig):
        units: int = 16

    class Tiny(Model):
        name, Config = "tiny", TinyConfig

        def build(self, config, spec):
            import keras
            inputs = keras.Input(spec.input_shape)
            x = keras.layers.Flatten()(inputs)
            x = keras.layers.Dense(config.units, activation=config.activation)(x)
            return keras.Model(inputs, classifier_head(x, spec))

    # pyproject.toml:  [project.entry-points."scaleflow.models"]  tiny = "my_pkg.tiny:Tiny"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from scaleflow.config.schema import ModelConfig


@dataclass(frozen=True)
class InputSpec:
    """What the data tells the model: the shape of one example and the number of classes."""

    input_shape: tuple[int, ...]
    num_classes: int


class Model:
    name: ClassVar[str]
    Config: ClassVar[type] = ModelConfig

    def build(self, config: Any, spec: InputSpec) -> Any:
        """Return an uncompiled `keras.Model` mapping `spec.input_shape` to class probabilities."""
        raise NotImplementedError

    def flops_per_example(self, config: Any, spec: InputSpec) -> float | None:
        """Forward-pass FLOPs for one example, without TensorFlow (for `mode=plan`); None: unknown."""
        return None

    def num_parameters(self, config: Any, spec: InputSpec) -> int | None:
        return None

    def num_gradient_tensors(self, config: Any, spec: InputSpec) -> int | None:
        """Trainable variables (one gradient tensor each): across processes TensorFlow all-reduces
        each separately, so the planner pays the link latency once per tensor. None: unknown (1)."""
        return None


def classifier_head(x: Any, spec: InputSpec) -> Any:
    """Softmax probabilities, kept in float32 under mixed precision for a stable loss."""
    import keras

    return keras.layers.Dense(spec.num_classes, activation="softmax", dtype="float32", name="probs")(x)
