"""Learnable synthetic data for every task, generated from a seed (no files)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleflow.config.schema import DataConfig, bounded
from scaleflow.data.base import InMemoryDataset


@dataclass
class SyntheticConfig(DataConfig):
    num_examples: int = bounded(16384, min=0, max=50_000_000)
    num_features: int = bounded(32, min=1, max=1_000_000)
    num_classes: int = bounded(10, min=2, max=100_000)  # classes; labels for task=multilabel
    separation: float = bounded(6.0, min=0.0)  # distance between class centres, in noise std-devs
    targets: int = bounded(1, min=1, max=10_000)  # task=regression: number of targets
    noise: float = bounded(0.1, min=0.0)  # task=regression: target noise std (signal std is 1)


class Synthetic(InMemoryDataset):
    """Data the task can learn, from `data.seed`:

    - classification: Gaussian clusters, one per class, around random centres `separation` apart (an
      MLP reaches >95% validation accuracy within a few epochs with the defaults);
    - binary: the same with two clusters;
    - multilabel: `num_classes` labels, each on where the features fall against a random hyperplane
      (20-50% of records carry each label);
    - regression: `targets` linear targets y = x W + b + noise (std `noise` against a signal std of 1),
      so R^2 close to 1 - noise^2 is reachable.

    Example: `python -m scaleflow task=regression data=synthetic data.targets=2 data.num_examples=1000`
    """

    name = "synthetic"
    Config = SyntheticConfig

    def arrays(self, config):
        rng = np.random.default_rng(config.seed)
        task = self.task.name
        n, f = config.num_examples, config.num_features
        if task == "regression":
            x = rng.normal(size=(n, f)).astype(np.float32)
            weights = rng.normal(size=(f, config.targets)) / np.sqrt(f)  # each target has unit variance
            bias = rng.normal(size=config.targets)
            y = x @ weights + bias + config.noise * rng.normal(size=(n, config.targets))
            return x, y.astype(np.float32)
        if task == "multilabel":
            x = rng.normal(size=(n, f)).astype(np.float32)
            z = x @ rng.normal(size=(f, config.num_classes))
            prevalence = rng.uniform(0.2, 0.5, size=config.num_classes)
            thresholds = np.array([np.quantile(z[:, k], 1.0 - p) if n else 0.0 for k, p in enumerate(prevalence)])
            return x, (z > thresholds).astype(np.int32)
        classes = 2 if task == "binary" else config.num_classes
        centres = rng.normal(size=(classes, f))
        centres *= config.separation / np.sqrt(2.0 * f)  # E|c_i - c_j| = separation
        labels = rng.integers(0, classes, size=n).astype(np.int32)
        noise = rng.normal(size=(n, f)).astype(np.float32)
        return (centres[labels] + noise).astype(np.float32), labels

    def min_classes(self, config):
        # The class count is the configured one, even if a tiny sample misses a class.
        return config.num_classes if self.task.name == "classification" else 0

    def describe(self, config):
        info = super().describe(config)
        import dataclasses

        return dataclasses.replace(info, input_shape=(config.num_features,))

    def keys(self, config, key):
        from scaleflow.errors import ConfigError

        x, y = self._arrays(config)
        if key in ("label", "y"):
            if y.ndim == 1 or y.shape[1] == 1 or self.task.name == "regression":
                return y.reshape(len(y), -1)[:, 0]
            return np.argmax(y, axis=1)  # multilabel: the first label a record carries
        if key in ("index", "id"):
            return np.arange(len(y))
        if key.startswith("x") and key[1:].isdigit() and int(key[1:]) < x.shape[1]:
            return x[:, int(key[1:])]
        raise ConfigError("data.shard_key", key, "label, index or x<i> (a feature column)")
