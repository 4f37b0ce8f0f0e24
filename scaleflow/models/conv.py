"""Shared helpers for convolutional models: pick 1-D or 2-D layers from the input's rank."""

from __future__ import annotations

from scaleflow.models.base import InputSpec


def conv_input(spec: InputSpec):
    """(inputs, x, Conv, Pool, GlobalPool) with x shaped for 1-D or 2-D convolutions."""
    import keras

    inputs = keras.Input(spec.input_shape, name="features")
    rank = len(spec.input_shape)
    if rank == 3:
        L = keras.layers
        return inputs, inputs, L.Conv2D, L.MaxPooling2D, L.GlobalAveragePooling2D
    x = keras.layers.Reshape((spec.input_shape[0], 1))(inputs) if rank == 1 else inputs
    L = keras.layers
    return inputs, x, L.Conv1D, L.MaxPooling1D, L.GlobalAveragePooling1D


def spatial_size(spec: InputSpec) -> int:
    shape = spec.input_shape
    return shape[0] * shape[1] if len(shape) == 3 else shape[0]


def in_channels(spec: InputSpec) -> int:
    shape = spec.input_shape
    return shape[-1] if len(shape) >= 2 else 1
