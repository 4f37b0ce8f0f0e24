"""Two interleaving half circles ("moons"), lifted into `num_features` dimensions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleflow.config.schema import DataConfig, bounded
from scaleflow.data.base import InMemoryDataset


@dataclass
class MoonsConfig(DataConfig):
    num_examples: int = bounded(2000, min=0)
    noise: float = bounded(0.1, min=0.0)
    num_features: int = bounded(2, min=2)


class Moons(InMemoryDataset):
    """Binary classification on two moons; extra features are random rotations of the two.

    Example: `python -m scaleflow data=moons data.noise=0.2 model=mlp`
    """

    name = "moons"
    Config = MoonsConfig
    conf = "pkg://scaleflow_example.conf"

    def arrays(self, config):
        rng = np.random.default_rng(config.seed)
        n = config.num_examples
        labels = rng.integers(0, 2, size=n).astype(np.int32)
        angle = rng.uniform(0, np.pi, size=n)
        x = np.where(labels == 0, np.cos(angle), 1 - np.cos(angle))
        y = np.where(labels == 0, np.sin(angle), 0.5 - np.sin(angle))
        points = np.stack([x, y], axis=1) + rng.normal(scale=config.noise, size=(n, 2))
        lift = rng.normal(size=(2, config.num_features))
        lift[:, :2] = np.eye(2)
        return (points @ lift).astype(np.float32), labels

    def min_classes(self, config):
        return 2  # both moons, even in a sample too small to hold one of them
