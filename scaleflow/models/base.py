"""The model extension point.

A model plugin is a class with a `name`, a `Config` dataclass (extending `ModelConfig`) and
`build_body`: the network from the input to its last hidden features. The task (`task=`, see
scaleflow/tasks) adds the head: softmax classes, a sigmoid, or linear regression targets, so one
plugin serves every task. Import TensorFlow/Keras inside `build_body`, never at module level.

Plugins written before tasks existed implement `build` and end in `classifier_head(x, spec)`; they
keep working (that head now follows the task too). See docs/plugins.md for the migration.

Example:

    @dataclass
    class TinyConfig(ModelConfig):
        units: int = 16

    class Tiny(Model):
        name, Config = "tiny", TinyConfig

        def build_body(self, config, spec):
            import keras
            inputs = keras.Input(spec.input_shape)
            x = keras.layers.Flatten()(inputs)
            x = keras.layers.Dense(config.units, activation=config.activation)(x)
            return keras.Model(inputs, x)  # no head: the task adds it

    # pyproject.toml:  [project.entry-points."scaleflow.models"]  tiny = "my_pkg.tiny:Tiny"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from scaleflow.config.schema import ModelConfig


@dataclass(frozen=True)
class InputSpec:
    """What the data and the task tell the model: the shape of one example, the width of the head
    (`num_classes`: classes for classification and multilabel, 1 for binary, targets for regression;
    the name predates tasks) and the task."""

    input_shape: tuple[int, ...]
    num_classes: int
    task: str = "classification"

    @property
    def num_outputs(self) -> int:
        return self.num_classes


class Model:
    name: ClassVar[str]
    Config: ClassVar[type] = ModelConfig

    def build_body(self, config: Any, spec: InputSpec) -> Any:
        """Return an uncompiled `keras.Model` from `spec.input_shape` to features (no output head).

        Planner figures (`num_parameters`, `flops_per_example`) count the head too: a Dense layer of
        `spec.num_outputs` units on the body's features."""
        raise NotImplementedError

    def build(self, config: Any, spec: InputSpec) -> Any:
        """The whole model: `build_body` plus the task's head. Plugins written before tasks override
        this instead of `build_body` and end in `classifier_head(x, spec)`."""
        from scaleflow import registry

        return registry.get("task", spec.task)().build_model(self, config, spec)

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
    """The task's head on features `x` (softmax for classification), kept in float32 under mixed
    precision. For plugins that build the whole model; new plugins implement `build_body` instead."""
    from scaleflow import registry

    return registry.get("task", spec.task)().head(x, spec.num_outputs)
