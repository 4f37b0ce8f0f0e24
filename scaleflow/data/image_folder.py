"""A directory of images, one sub-directory per class."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import numpy as np

from scaleflow.config.schema import DataConfig, bounded, items
from scaleflow.data.base import DataInfo, Dataset, file_fingerprint
from scaleflow.errors import ConfigError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


@dataclass
class ImageFolderConfig(DataConfig):
    image_size: List[int] = items([32, 32])  # [height, width] after resizing
    channels: int = bounded(3, min=1, max=4)


def list_images(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, labels, class names): classes are sorted sub-directory names, files sorted within."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    files, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, cls))):
            if f.lower().endswith(EXTENSIONS):
                files.append(os.path.join(root, cls, f))
                labels.append(label)
    return files, np.array(labels, dtype=np.int32), classes


class ImageFolder(Dataset):
    """Images under `data.path/<class>/`, decoded, resized to `image_size` and scaled to [0, 1].

    Each image file is one record (so file-level sharding is always possible).
    Example: `python -m scaleflow data=image_folder data.path=flowers/ model=cnn`
    """

    name = "image_folder"
    Config = ImageFolderConfig
    path_kind = "dir"

    @classmethod
    def validate(cls, cfg) -> None:
        super().validate(cfg)
        size = list(cfg.data.image_size)
        if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
            raise ConfigError("data.image_size", size, "[height, width], integers >= 1")

    def describe(self, config) -> DataInfo:
        files, labels, classes = list_images(config.path)
        if not classes:
            raise ConfigError("data.path", config.path, "a directory with one sub-directory of images per class")
        h, w = config.image_size
        return DataInfo(num_examples=len(files), input_shape=(h, w, config.channels), num_classes=len(classes),
                        fingerprint=file_fingerprint(files), files=tuple(files), file_records=(1,) * len(files),
                        extra={"classes": classes})

    def keys(self, config, key):
        files, labels, classes = list_images(config.path)
        if key in ("path", "file"):
            return np.array(files, dtype=object)
        if key in ("label", "class"):
            return labels
        raise ConfigError("data.shard_key", key, "path or label")

    def read(self, config, files=None):
        import tensorflow as tf

        all_files, labels, _ = list_images(config.path)
        label_of = dict(zip(all_files, labels.tolist()))
        files = list(files) if files is not None else all_files
        h, w = config.image_size
        channels = config.channels

        def load(path, label):
            image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, [h, w])
            return tf.ensure_shape(image, [h, w, channels]), label

        ds = tf.data.Dataset.from_tensor_slices((files, [label_of[f] for f in files]))
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
