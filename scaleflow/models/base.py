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

import abc
import re
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


class Model(abc.ABC):
    """Base class of every model (built-in or plugin). Implement `build`; the planner hooks
    (`flops_per_example`, `num_parameters`, ...) let `mode=plan` predict without TensorFlow.

    Class attributes:
        name: the option name (`model=<name>`), equal to the entry point's name.
        Config: the dataclass typing the `model` node (extend `ModelConfig`).
        conf: `pkg://...` search path of the plugin's config files (`model/<name>.yaml`), or None.
        backends: the Keras backends its layers run on. A plugin that uses TensorFlow ops (a TF-only
            custom layer) keeps the default; one written in Keras ops only adds "jax", which
            strategy=model_parallel|hybrid need.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = ModelConfig
    conf: ClassVar[str | None] = None
    backends: ClassVar[tuple[str, ...]] = ("tensorflow",)

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Cross-field rules of this model, before TensorFlow is imported: raise ConfigError."""

    def build_body(self, config: Any, spec: InputSpec) -> Any:
        """The model without its output head; the task adds the head (`build`). Implement this one.

        Planner figures (`num_parameters`, `flops_per_example`) count the head too: a Dense layer of
        `spec.num_outputs` units on the body's features.

        Args:
            config: the `model` config node (typed by `Config`).
            spec: the example shape, class count and task the dataset describes.
        Returns:
            An uncompiled `keras.Model` from `spec.input_shape` to features; called under the
            strategy's scope.
        Example:
            inputs = keras.Input(spec.input_shape)
            return keras.Model(inputs, keras.layers.Dense(config.units, activation="relu")(inputs))
        """
        raise NotImplementedError(f"model={self.name} implements neither build_body nor build")

    def build(self, config: Any, spec: InputSpec) -> Any:
        """The whole model: `build_body` plus the task's head. Plugins written before tasks override
        this instead of `build_body` and end in `classifier_head(x, spec)`."""
        from scaleflow import registry

        return registry.get("task", spec.task)().build_model(self, config, spec)

    def cut_points(self, config: Any) -> list[str]:
        """Where `strategy=pipeline` may cut the model into stages, from the config alone (no TensorFlow).

        Returns:
            Names of layers, in model order, after which exactly one tensor flows on (no skip
            connection crosses): each is a possible boundary between two stages. [] (the default):
            the model cannot be cut.
        Example:
            return [f"dense_{i}" for i in range(len(config.hidden_units))]   # between dense blocks
        """
        return []

    def cut_segments(self, config: Any, spec: InputSpec) -> list[list[str]] | None:
        """The layers holding variables (the first part of their paths, as `variable_shapes` names
        them) between consecutive cut points, in order: one segment more than `cut_points`. mode=plan
        places each pipeline stage's variables, FLOPs and activations with it.

        Returns:
            The segments, or None when unknown (the planner then cuts between layers with kernels).
        Example:
            n = len(config.hidden_units)        # cut points: after dense_0 .. dense_{n-2}
            return [[f"dense_{i}"] for i in range(n - 1)] + [[f"dense_{n - 1}", "scores"]]
        """
        return None

    def flops_per_example(self, config: Any, spec: InputSpec) -> float | None:
        """Forward-pass FLOPs for one example, without TensorFlow (for `mode=plan`).

        Returns:
            FLOPs, or None when unknown (the planner then says it cannot predict).
        Example:
            return 2.0 * math.prod(spec.input_shape) * spec.num_classes   # one dense layer
        """
        return None

    def num_parameters(self, config: Any, spec: InputSpec) -> int | None:
        """Trainable parameters, without TensorFlow (gradient bytes for the planner's all-reduce).

        Returns:
            The count, or None when unknown.
        """
        return None

    def num_gradient_tensors(self, config: Any, spec: InputSpec) -> int | None:
        """Trainable variables (one gradient tensor each): across processes TensorFlow all-reduces
        each separately, so the planner pays the link latency once per tensor.

        Returns:
            The count, or None when unknown (the planner assumes 1).
        """
        return None

    def activations_per_example(self, config: Any, spec: InputSpec) -> float | None:
        """Activation values one example keeps for the backward pass (the planner's memory estimate).

        Returns:
            The count, or None when unknown (the planner estimates 2 x sqrt(FLOPs/2)).
        """
        return None

    def variable_shapes(self, config: Any, spec: InputSpec) -> dict[str, tuple[int, ...]] | None:
        """Every trainable variable of the built model (head included; not the non-trainable ones such
        as normalisation statistics, which `num_parameters` may count), without TensorFlow: its path
        as Keras names it (`variable.path`, e.g. "dense_0/kernel"; the task's head is "scores") and
        its shape. The planner's memory per device under a layout, and the layout checks (a rule
        that matches no variable, a dimension the mesh does not divide) before training, read it.

        Returns:
            {path: shape} in build order, or None when unknown (the planner then treats the model as
            one replicated block of `num_parameters`).
        Example:
            w = [math.prod(spec.input_shape), config.units, spec.num_outputs]
            return {"dense/kernel": (w[0], w[1]), "dense/bias": (w[1],),
                    "scores/kernel": (w[1], w[2]), "scores/bias": (w[2],)}
        """
        return None

    def layout_rules(self, config: Any, spec: InputSpec) -> dict[str, tuple[str | None, ...]]:
        """The default layout under model and hybrid parallelism: which variables split on which mesh
        axis ("model" or "batch"; None: that dimension is not split). `strategy.layout` overrides it
        rule by rule; a variable no rule matches is replicated.

        Args:
            config, spec: as for `build_body`.
        Returns:
            {pattern: axes}: a pattern is the variable path or a regular expression matching all of
            it (`re.fullmatch`, as Keras' `LayoutMap` matches); axes has one entry per dimension of the variables it matches.
            The default: every kernel of the body (rank >= 2, from `variable_shapes`) split on its last
            dimension (output features or channels) over "model"; biases, normalisation and the
            task's head ("scores", whose width rarely divides by the mesh) replicated.
        Example:
            return {"dense_0/kernel": (None, "model"), "dense_1/kernel": ("model", None)}
        """
        shapes = self.variable_shapes(config, spec) or {}
        return {re.escape(path): (None,) * (len(shape) - 1) + ("model",) for path, shape in shapes.items()
                if path.endswith("/kernel") and len(shape) >= 2 and not path.startswith("scores/")}


def classifier_head(x: Any, spec: InputSpec) -> Any:
    """The task's head on features `x` (softmax for classification), kept in float32 under mixed
    precision. For plugins that build the whole model; new plugins implement `build_body` instead."""
    from scaleflow import registry

    return registry.get("task", spec.task)().head(x, spec.num_outputs)
