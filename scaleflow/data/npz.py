"""A NumPy .npz archive of features and integer (or string) labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleflow.config.schema import DataConfig
from scaleflow.data.base import InMemoryDataset, label_ids
from scaleflow.errors import ConfigError, did_you_mean, one_of


@dataclass
class NPZConfig(DataConfig):
    x_key: str = "x"
    y_key: str = "y"


class NPZ(InMemoryDataset):
    """Arrays `x_key` (N, ...) and `y_key` (N,) from an .npz file.

    Example: `python -m scaleflow data=npz data.path=train.npz data.x_key=images data.y_key=labels`
    """

    name = "npz"
    Config = NPZConfig
    path_kind = "file"

    def arrays(self, config):
        with np.load(config.path, allow_pickle=False) as archive:
            for key_name in ("x_key", "y_key"):
                key = config[key_name]
                if key not in archive.files:
                    raise ConfigError(f"data.{key_name}", key, one_of(archive.files) + f" (arrays in {config.path})",
                                      did_you_mean(key, archive.files))
            x, y = archive[config.x_key], archive[config.y_key]
        if len(x) != len(y):
            raise ConfigError("data.path", config.path, f"arrays of equal length; {config.x_key} has {len(x)}"
                              f" rows, {config.y_key} has {len(y)}")
        labels, _ = label_ids(y)
        return x.astype(np.float32), labels

    def keys(self, config, key):
        with np.load(config.path, allow_pickle=False) as archive:
            if key not in archive.files:
                raise ConfigError("data.shard_key", key, one_of(archive.files), did_you_mean(key, archive.files))
            return archive[key]
