"""A NumPy .npz archive of features and labels (class ids or names, multi-hot rows, or float targets)."""

from __future__ import annotations

import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from scaleflow.config.schema import DataConfig
from scaleflow.data.base import InMemoryDataset
from scaleflow.errors import ConfigError, DataError, did_you_mean, one_of
from scaleflow.security import crypto


@contextmanager
def open_npz(path: str):
    """np.load of an .npz archive; a file that is not one, or a truncated one, is a DataError."""
    try:
        source = crypto.open_input(path) if crypto.is_encrypted(path) else path  # decrypted in memory
        archive = np.load(source, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, f"is not a readable .npz archive ({type(e).__name__}: {e})",
                        hint="Write it with numpy.savez or numpy.savez_compressed") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(path, "holds a single .npy array, not an .npz archive of named arrays",
                        hint="Write it with numpy.savez(path, x=features, y=labels)")
    with archive:
        yield archive


def load_array(archive, path: str, key: str) -> np.ndarray:
    """One array of the archive; a corrupt member or an object (pickled) array is a DataError."""
    try:
        return archive[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(path, f"array {key!r} holds Python objects (pickled), which are not loaded "
                            "for safety", hint="Save numeric arrays (or strings for labels)") from None
        raise DataError(path, f"array {key!r} cannot be read ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(path, f"array {key!r} cannot be read: the archive is truncated or corrupt "
                        f"({type(e).__name__}: {e})") from None


@dataclass
class NPZConfig(DataConfig):
    x_key: str = "x"
    y_key: str = "y"


class NPZ(InMemoryDataset):
    """Arrays `x_key` (N, ...) and `y_key` (N,) or (N, K) from an .npz file.

    Example: `python -m scaleflow data=npz data.path=train.npz data.x_key=images data.y_key=labels`
    """

    name = "npz"
    Config = NPZConfig
    path_kind = "file"
    label_key = "data.y_key"

    def arrays(self, config):
        with open_npz(config.path) as archive:
            for key_name in ("x_key", "y_key"):
                key = config[key_name]
                if key not in archive.files:
                    raise ConfigError(f"data.{key_name}", key, one_of(archive.files) + f" (arrays in {config.path})",
                                      did_you_mean(key, archive.files))
            x, y = load_array(archive, config.path, config.x_key), load_array(archive, config.path, config.y_key)
        if x.ndim == 0 or y.ndim not in (1, 2):
            raise DataError(config.path, f"array {config.x_key!r} has shape {x.shape} and {config.y_key!r} "
                            f"{y.shape}: expected features (N, ...) and labels (N,) or (N, K)")
        if x.dtype.kind not in "biuf":
            raise DataError(config.path, f"array {config.x_key!r} has dtype {x.dtype}: features must be numeric")
        if len(x) != len(y):
            raise ConfigError("data.path", config.path, f"arrays of equal length; {config.x_key} has {len(x)}"
                              f" rows, {config.y_key} has {len(y)}")
        from scaleflow.data.mask import Masking, mask_features

        x = mask_features(x, config.path, Masking.from_config(config), config.get("shard_key"))  # data.mask
        return x.astype(np.float32), y  # raw labels: the task reads them

    def where(self, config, index):
        return f"row {index} of {config.y_key} in {config.path}"

    def feature_name(self, config, position):
        return f"{config.x_key}[:, {', '.join(map(str, position))}]" if position else config.x_key

    def keys(self, config, key):
        with open_npz(config.path) as archive:
            if key not in archive.files:
                raise ConfigError("data.shard_key", key, one_of(archive.files), did_you_mean(key, archive.files))
            from scaleflow.data.mask import Masking, mask_keys

            return mask_keys(load_array(archive, config.path, key), Masking.from_config(config), key)
