"""Learnable synthetic classification data, generated from a seed (no files)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleflow.config.schema import DataConfig, bounded
from scaleflow.data.base import InMemoryDataset


@dataclass
class SyntheticConfig(DataConfig):
    num_examples: int = bounded(16384, min=0, max=50_000_000)
    num_features: int = bounded(32, min=1, max=1_000_000)
    num_classes: int = bounded(10, min=2, max=100_000)
    separation: float = bounded(6.0, min=0.0)  # distance between class centres, in noise std-devs


class Synthetic(InMemoryDataset):
    """Gaussian clusters, one per class, around random centres `separation` apart.

    With the default separation an MLP reaches >95% validation accuracy within a few epochs.
    Example: `python -m scaleflow data=synthetic data.num_examples=1000 data.num_classes=3`
    """

    name = "synthetic"
    Config = SyntheticConfig

    def arrays(self, config):
        rng = np.random.default_rng(config.seed)
        centres = rng.normal(size=(config.num_classes, config.num_features))
        centres *= config.separation / np.sqrt(2.0 * config.num_features)  # E|c_i - c_j| = separation
        labels = rng.integers(0, config.num_classes, size=config.num_examples).astype(np.int32)
        noise = rng.normal(size=(config.num_examples, config.num_features)).astype(np.float32)
        features = (centres[labels] + noise).astype(np.float32)
        return features, labels

    def describe(self, config):
        info = super().describe(config)
        # The class count is the configured one, even if a tiny sample misses a class.
        return type(info)(info.num_examples, (config.num_features,), config.num_classes, info.fingerprint)

    def keys(self, config, key):
        from scaleflow.errors import ConfigError

        x, y = self._arrays(config)
        if key in ("label", "y"):
            return y
        if key in ("index", "id"):
            return np.arange(len(y))
        if key.startswith("x") and key[1:].isdigit() and int(key[1:]) < x.shape[1]:
            return x[:, int(key[1:])]
        raise ConfigError("data.shard_key", key, "label, index or x<i> (a feature column)")
