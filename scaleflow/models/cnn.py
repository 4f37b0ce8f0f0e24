"""Small convolutional network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from scaleflow.config.schema import ModelConfig, bounded, items
from scaleflow.models.base import InputSpec, Model
from scaleflow.models.conv import conv_input, in_channels, spatial_size


@dataclass
class CNNConfig(ModelConfig):
    filters: List[int] = items([32, 64])
    kernel_size: int = bounded(3, min=1, max=15)
    dense_units: int = bounded(128, min=1)


class CNN(Model):
    """Conv -> pool blocks of `filters` channels, global average pooling, a dense layer.

    Works on images (H, W, C) with Conv2D and on vectors or sequences with Conv1D.
    Example: `python -m scaleflow model=cnn data=image_folder data.path=images/`
    """

    name = "cnn"
    Config = CNNConfig
    backends = ("tensorflow", "jax")

    @classmethod
    def validate(cls, cfg) -> None:
        from scaleflow.errors import ConfigError

        filters = list(cfg.model.filters)
        if not filters or any(not isinstance(f, int) or f < 1 for f in filters):
            raise ConfigError("model.filters", filters, "a non-empty list of integers >= 1")

    def build_body(self, config, spec: InputSpec):
        import keras

        inputs, x, Conv, Pool, GlobalPool = conv_input(spec)
        for i, filters in enumerate(config.filters):
            x = Conv(filters, config.kernel_size, padding="same", activation=config.activation,
                     name=f"conv_{i}")(x)
            if x.shape[1] is not None and x.shape[1] >= 4:
                x = Pool(2)(x)
            x = keras.layers.Identity(name=f"block_{i}")(x)  # a named cut point (strategy=pipeline)
        x = GlobalPool()(x)
        x = keras.layers.Dense(config.dense_units, activation=config.activation, name="dense")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout)(x)
        return keras.Model(inputs, x, name="cnn")  # the task adds the head

    def variable_shapes(self, config, spec: InputSpec) -> dict[str, tuple[int, ...]]:
        window = (config.kernel_size,) * (2 if len(spec.input_shape) == 3 else 1)
        shapes, channels = {}, in_channels(spec)
        for i, f in enumerate(config.filters):
            shapes[f"conv_{i}/kernel"], shapes[f"conv_{i}/bias"] = (*window, channels, f), (f,)
            channels = f
        # the dense layer is named "dense" (a cut point of strategy=pipeline)
        shapes["dense/kernel"], shapes["dense/bias"] = (channels, config.dense_units), (config.dense_units,)
        shapes["scores/kernel"], shapes["scores/bias"] = (config.dense_units, spec.num_classes), (spec.num_classes,)
        return shapes

    def cut_points(self, config) -> list[str]:
        """After each conv block and after the dense layer."""
        return [f"block_{i}" for i in range(len(config.filters))] + ["dense"]

    def cut_segments(self, config, spec: InputSpec) -> list[list[str]]:
        return [[f"conv_{i}"] for i in range(len(config.filters))] + [["dense"], ["scores"]]

    def num_parameters(self, config, spec: InputSpec) -> int:
        k = config.kernel_size ** (2 if len(spec.input_shape) == 3 else 1)
        channels, total = in_channels(spec), 0
        for f in config.filters:
            total += k * channels * f + f
            channels = f
        return total + channels * config.dense_units + config.dense_units + \
            config.dense_units * spec.num_classes + spec.num_classes

    def num_gradient_tensors(self, config, spec: InputSpec) -> int:
        return 2 * (len(config.filters) + 2)  # each conv, the dense layer and the head: kernel + bias

    def flops_per_example(self, config, spec: InputSpec) -> float:
        k = config.kernel_size ** (2 if len(spec.input_shape) == 3 else 1)
        pool = 4 if len(spec.input_shape) == 3 else 2
        size, channels, flops = spatial_size(spec), in_channels(spec), 0.0
        for f in config.filters:
            flops += 2.0 * size * k * channels * f
            channels, size = f, max(1, size // pool)
        return flops + 2.0 * (channels * config.dense_units + config.dense_units * spec.num_classes)
