"""A directory of images, one sub-directory per class."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import numpy as np

from scaleflow.config.schema import DataConfig, bounded, items
from scaleflow.data.base import DataInfo, Dataset, file_fingerprint
from scaleflow.errors import ConfigError, DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
# The formats tf.io.decode_image reads, by their first bytes: checking 8 bytes per file at describe
# time names a non-image file before training instead of "Unknown image file format" mid-epoch.
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP"}


def image_format(path: str) -> str | None:
    """'PNG', 'JPEG', 'GIF' or 'BMP' from the file's first bytes; None when it is none of them."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)


def check_images(files: list[str]) -> None:
    """DataError naming the first file that is not an image TensorFlow can decode."""
    for path in files:
        try:
            kind = image_format(path)
        except OSError as e:
            raise DataError(path, f"cannot be read ({e.strerror})") from None
        if kind is None:
            size = os.path.getsize(path)
            raise DataError(path, "is not a PNG, JPEG, GIF or BMP image (" + ("an empty file" if not size else
                            "its first bytes match no image format") + ")",
                            hint="Remove it from the class directory or replace it with a real image")


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
        check_images(files)
        h, w = config.image_size
        if self.task.name not in ("classification", "binary"):
            raise ConfigError("task", self.task.name, "classification or binary for data=image_folder",
                              "Its labels are the sub-directory names, one class per image")
        targets = self.task.encode(np.array(classes)[labels] if len(labels) else np.array([], dtype=str), config,
                                   key="data.path", where=lambda i: files[i])
        return DataInfo(num_examples=len(files), input_shape=(h, w, config.channels), num_classes=targets.num_classes,
                        fingerprint=file_fingerprint(files), files=tuple(files), file_records=(1,) * len(files),
                        extra={"classes": classes}, class_names=targets.class_names)

    def keys(self, config, key):
        files, labels, classes = list_images(config.path)
        if key in ("path", "file"):
            return np.array(files, dtype=object)
        if key in ("label", "class"):
            return labels
        raise ConfigError("data.shard_key", key, "path or label")

    def explain_read_error(self, config, error, files=None):
        """An image whose header is fine but whose data is not (truncated, corrupt), found by
        TensorFlow mid-epoch without a file name: decode each file to find it."""
        import tensorflow as tf

        if not isinstance(error, (tf.errors.InvalidArgumentError, tf.errors.DataLossError)):
            return None
        for path in list(files) if files is not None else list_images(config.path)[0]:
            try:
                tf.io.decode_image(tf.io.read_file(path), channels=config.channels, expand_animations=False)
            except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
                first = str(getattr(e, "message", e)).strip().splitlines()[0]
                return DataError(path, f"cannot be decoded as an image ({first})",
                                 hint="Remove it from the class directory or replace it with a real image")
        return None

    def read(self, config, files=None):
        import tensorflow as tf

        all_files, labels, classes = list_images(config.path)
        # Class ids follow the task's reading of the directory names (e.g. data.class_names order).
        ids = self.task.encode(np.array(classes)[labels], config, key="data.path").y.reshape(len(labels), -1)[:, 0] \
            if len(labels) else labels
        label_of = dict(zip(all_files, ids.tolist()))
        files = list(files) if files is not None else all_files
        h, w = config.image_size
        channels = config.channels

        def load(path, label):
            image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, [h, w])
            return tf.ensure_shape(image, [h, w, channels]), self.task.tf_targets(label)

        ds = tf.data.Dataset.from_tensor_slices((files, [label_of[f] for f in files]))
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
