"""Small residual network."""

from __future__ import annotations

from dataclasses import dataclass

from scaleflow.config.schema import ModelConfig, bounded
from scaleflow.models.base import InputSpec, Model
from scaleflow.models.conv import conv_input, in_channels, spatial_size


@dataclass
class ResNetConfig(ModelConfig):
    width: int = bounded(32, min=1, max=4096)  # channels of the first stage; doubles per stage
    stages: int = bounded(2, min=1, max=6)
    depth: int = bounded(2, min=1, max=32)  # residual blocks per stage
    kernel_size: int = bounded(3, min=1, max=15)


class ResNet(Model):
    """Pre-activation residual blocks (BN -> act -> conv, twice) in `stages` stages.

    BatchNormalization is synchronized across replicas so Mirrored replicas agree.
    Example: `python -m scaleflow model=resnet model.width=16 model.depth=1`
    """

    name = "resnet"
    Config = ResNetConfig
    backends = ("tensorflow", "jax")

    def build_body(self, config, spec: InputSpec):
        import keras

        L = keras.layers
        inputs, x, Conv, Pool, GlobalPool = conv_input(spec)
        x = Conv(config.width, config.kernel_size, padding="same", name="stem")(x)
        for stage in range(config.stages):
            width = config.width * 2**stage
            if stage > 0:
                x = Pool(2, padding="same")(x)
            for block in range(config.depth):
                shortcut = x if x.shape[-1] == width else Conv(width, 1, name=f"proj_{stage}_{block}")(x)
                for j in range(2):
                    x = L.BatchNormalization(synchronized=True)(x)
                    x = L.Activation(config.activation)(x)
                    x = Conv(width, config.kernel_size, padding="same", name=f"conv_{stage}_{block}_{j}")(x)
                x = L.Add(name=f"block_{stage}_{block}")([shortcut, x])  # a cut point (strategy=pipeline)
        x = L.BatchNormalization(synchronized=True)(x)
        x = L.Activation(config.activation)(x)
        x = GlobalPool()(x)
        if config.dropout:
            x = L.Dropout(config.dropout)(x)
        return keras.Model(inputs, x, name="resnet")  # the task adds the head

    def variable_shapes(self, config, spec: InputSpec) -> dict[str, tuple[int, ...]]:
        window = (config.kernel_size,) * (2 if len(spec.input_shape) == 3 else 1)
        ones = (1,) * len(window)
        norms = iter(["batch_normalization"] + [f"batch_normalization_{i}" for i in range(1, 1 << 16)])  # Keras' names

        def norm(shapes, channels):
            name = next(norms)
            shapes[f"{name}/gamma"], shapes[f"{name}/beta"] = (channels,), (channels,)

        shapes = {"stem/kernel": (*window, in_channels(spec), config.width), "stem/bias": (config.width,)}
        channels = config.width
        for stage in range(config.stages):
            width = config.width * 2**stage
            for block in range(config.depth):
                for j in range(2):
                    norm(shapes, channels if j == 0 else width)
                    if j == 1 and channels != width:  # Keras orders the projection here (by graph depth)
                        proj = f"proj_{stage}_{block}"
                        shapes[f"{proj}/kernel"], shapes[f"{proj}/bias"] = (*ones, channels, width), (width,)
                    conv = f"conv_{stage}_{block}_{j}"
                    shapes[f"{conv}/kernel"] = (*window, channels if j == 0 else width, width)
                    shapes[f"{conv}/bias"] = (width,)
                channels = width
        norm(shapes, channels)
        shapes["scores/kernel"], shapes["scores/bias"] = (channels, spec.num_classes), (spec.num_classes,)
        return shapes

    def cut_points(self, config) -> list[str]:
        """After each residual block (its Add): nothing else crosses between blocks."""
        return [f"block_{stage}_{block}" for stage in range(config.stages) for block in range(config.depth)]

    def cut_segments(self, config, spec: InputSpec) -> list[list[str]]:
        """The stem with the first residual block, each further block (from the normalisation before
        its first convolution), then the final normalisation with the head."""
        layers = list(dict.fromkeys(path.split("/")[0] for path in self.variable_shapes(config, spec)))
        blocks = [(s, b) for s in range(config.stages) for b in range(config.depth)]
        starts = [0] + [layers.index(f"conv_{s}_{b}_0") - 1 for s, b in blocks[1:]] + [layers.index("scores") - 1]
        return [layers[a:b] for a, b in zip(starts, starts[1:] + [len(layers)])]

    def flops_per_example(self, config, spec: InputSpec) -> float:
        k = config.kernel_size ** (2 if len(spec.input_shape) == 3 else 1)
        pool = 4 if len(spec.input_shape) == 3 else 2
        size, channels = spatial_size(spec), in_channels(spec)
        flops = 2.0 * size * k * channels * config.width
        channels = config.width
        for stage in range(config.stages):
            width = config.width * 2**stage
            if stage > 0:
                size = max(1, size // pool)
            for _ in range(config.depth):
                flops += 2 * 2.0 * size * k * channels * width + 2.0 * size * channels * width * (channels != width)
                channels = width
        return flops + 2.0 * channels * spec.num_classes

    def num_gradient_tensors(self, config, spec: InputSpec) -> int:
        channels, tensors = config.width, 2 + 2 + 2  # stem, final BN, head
        for stage in range(config.stages):
            width = config.width * 2**stage
            for _ in range(config.depth):
                tensors += 2 * (channels != width) + 2 * (2 + 2)  # projection; 2 x (BN + conv)
                channels = width
        return tensors

    def num_parameters(self, config, spec: InputSpec) -> int:
        k = config.kernel_size ** (2 if len(spec.input_shape) == 3 else 1)
        channels = in_channels(spec)
        total = k * channels * config.width + config.width
        channels = config.width
        for stage in range(config.stages):
            width = config.width * 2**stage
            for _ in range(config.depth):
                if channels != width:
                    total += channels * width + width
                total += 2 * channels * 2 + k * channels * width + width + 2 * width * 2 + k * width * width + width
                channels = width
        return total + 4 * channels + channels * spec.num_classes + spec.num_classes
