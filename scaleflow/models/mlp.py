"""Multi-layer perceptron."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

from scaleflow.config.schema import ModelConfig, items
from scaleflow.models.base import InputSpec, Model


@dataclass
class MLPConfig(ModelConfig):
    hidden_units: List[int] = items([128, 128])
    batch_norm: bool = False


class MLP(Model):
    """Dense layers of `hidden_units` widths over the flattened input.

    Example: `python -m scaleflow model=mlp model.hidden_units=[256,256,128] model.dropout=0.1`
    """

    name = "mlp"
    Config = MLPConfig
    backends = ("tensorflow", "jax")

    @classmethod
    def validate(cls, cfg) -> None:
        from scaleflow.errors import ConfigError

        units = list(cfg.model.hidden_units)
        if not units or any(not isinstance(u, int) or u < 1 for u in units):
            raise ConfigError("model.hidden_units", units, "a non-empty list of integers >= 1")

    def build_body(self, config, spec: InputSpec):
        import keras

        inputs = keras.Input(spec.input_shape, name="features")
        x = keras.layers.Flatten()(inputs) if len(spec.input_shape) > 1 else inputs
        for i, units in enumerate(config.hidden_units):
            x = keras.layers.Dense(units, activation=None if config.batch_norm else config.activation,
                                   name=f"dense_{i}")(x)
            if config.batch_norm:
                # synchronized: moving statistics drift between Mirrored replicas otherwise.
                x = keras.layers.BatchNormalization(synchronized=True)(x)
                x = keras.layers.Activation(config.activation, name=f"block_{i}_activation")(x)
            if config.dropout:
                x = keras.layers.Dropout(config.dropout, name=f"block_{i}_dropout")(x)
        return keras.Model(inputs, x, name="mlp")  # the task adds the head

    def cut_points(self, config) -> list[str]:
        """Between hidden blocks (after a block's last layer: dense, activation or dropout); the head
        stays with the last block, as mode=plan's stages have it."""
        last = "block_{}_dropout" if config.dropout else ("block_{}_activation" if config.batch_norm else "dense_{}")
        return [last.format(i) for i in range(len(config.hidden_units) - 1)]

    def cut_segments(self, config, spec: InputSpec) -> list[list[str]]:
        layers = list(dict.fromkeys(path.split("/")[0] for path in self.variable_shapes(config, spec)))
        starts = [layers.index(f"dense_{i}") for i in range(len(config.hidden_units))]
        return [layers[a:b] for a, b in zip(starts, starts[1:] + [len(layers)])]  # the head with the last block

    def _widths(self, config, spec: InputSpec) -> list[int]:
        return [math.prod(spec.input_shape), *config.hidden_units, spec.num_classes]

    def num_parameters(self, config, spec: InputSpec) -> int:
        w = self._widths(config, spec)
        return sum(a * b + b for a, b in zip(w, w[1:]))

    def variable_shapes(self, config, spec: InputSpec) -> dict[str, tuple[int, ...]]:
        w = self._widths(config, spec)
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (a, b) in enumerate(zip(w[:-2], w[1:-1])):
            shapes[f"dense_{i}/kernel"], shapes[f"dense_{i}/bias"] = (a, b), (b,)
            if config.batch_norm:  # Keras' automatic names in a fresh process
                bn = "batch_normalization" + (f"_{i}" if i else "")
                shapes[f"{bn}/gamma"], shapes[f"{bn}/beta"] = (b,), (b,)
        shapes["scores/kernel"], shapes["scores/bias"] = (w[-2], w[-1]), (w[-1],)
        return shapes

    def num_gradient_tensors(self, config, spec: InputSpec) -> int:
        layers = len(config.hidden_units)
        return 2 * (layers + 1) + (2 * layers if config.batch_norm else 0)  # kernel+bias; BN gamma+beta

    def flops_per_example(self, config, spec: InputSpec) -> float:
        w = self._widths(config, spec)
        return float(sum(2 * a * b for a, b in zip(w, w[1:])))
