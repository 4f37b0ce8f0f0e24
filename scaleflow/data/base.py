"""The dataset extension point.

A dataset plugin describes its records without TensorFlow (for `mode=plan`, `mode=shards` and
sharding decisions) and reads them with tf.data. Records have a global index 0..N-1 in a fixed,
documented order; sharding and the train/validation split are decided on those indices, so every
process computes the same assignment.

Small in-memory datasets subclass `InMemoryDataset` and implement only `arrays`.
File-backed datasets implement `describe` and `read` (and `keys` to support `data.shard=hash`
with a `data.shard_key`).

A dataset reads labels as its task needs them (`self.task`, given at construction; classification
when none is given): in-memory datasets return raw labels from `arrays` and the task encodes them
(class ids, multi-hot rows, float targets), naming any bad label by row and value.

Example (in memory):

    class Tiny(InMemoryDataset):
        name = "tiny"

        def arrays(self, config):
            x = np.random.default_rng(config.seed).normal(size=(256, 4)).astype("float32")
            return x, (x[:, 0] > 0).astype("int32")

    # pyproject.toml:  [project.entry-points."scaleflow.datasets"]  tiny = "my_pkg.tiny:Tiny"
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from scaleflow.config.schema import DataConfig
from scaleflow.errors import DataError


@dataclass(frozen=True)
class DataInfo:
    num_examples: int
    input_shape: tuple[int, ...]
    num_classes: int
    fingerprint: str
    files: tuple[str, ...] = ()  # file-backed sources, in global read order
    file_records: tuple[int, ...] = ()  # records in each file; global index runs file by file
    extra: dict = field(default_factory=dict)
    class_names: tuple[str, ...] = ()  # in class-id order (classification, binary, multilabel)
    target_names: tuple[str, ...] = ()  # regression targets, in column order

    @property
    def file_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.file_records, dtype=np.int64)])


class Dataset(abc.ABC):
    """Base class of every dataset (built-in or plugin).

    Class attributes:
        name: the option name (`data=<name>`), equal to the entry point's name.
        Config: the dataclass typing the `data` node (extend `DataConfig`).
        conf: `pkg://...` search path of the plugin's config files (`data/<name>.yaml`), or None.
        path_kind: "file" | "dir" | "exists" to have `data.path` checked in validation, or None.
        in_memory: True when the records are held as arrays (`gather_arrays`), not read by file.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = DataConfig
    conf: ClassVar[str | None] = None
    path_kind: ClassVar[str | None] = None  # "file" | "dir" | "exists": data.path is checked
    in_memory: ClassVar[bool] = False
    label_key: ClassVar[str] = "data.label"  # the config key that names the label, for errors

    def __init__(self, task: Any = None):
        if task is None:
            from scaleflow import registry
            from scaleflow.tasks import DEFAULT

            task = registry.get("task", DEFAULT)()
        self.task = task

    @classmethod
    def validate(cls, cfg) -> None:
        """Rules that need only the config, before TensorFlow: `data.path` (per `path_kind`) and the
        sharding rules. A subclass adds its own and calls `super().validate(cfg)`.

        Args:
            cfg: the composed config.
        Raises:
            ConfigError naming the key, the value and what is allowed.
        """
        if cls.path_kind:
            from scaleflow.config.paths import check_path

            check_path("data.path", cfg.data.path, cls.path_kind)
        from scaleflow.data.index import check_index_config
        from scaleflow.data.rules import check_shard_config
        from scaleflow.data.service_config import check_config as check_service_config

        check_shard_config(cfg)
        check_index_config(cfg.data)
        check_service_config(cfg)  # data.service: syntax, and what cannot run on a tf.data service

    @abc.abstractmethod
    def describe(self, config) -> DataInfo:
        """Size, shapes, classes and files, without TensorFlow.

        Args:
            config: the `data` config node.
        Returns:
            A `DataInfo`; records are numbered 0..num_examples-1 in a fixed order (file by file).
        Example:
            return DataInfo(num_examples=1000, input_shape=(4,), num_classes=2, fingerprint="...")
        """

    def for_inference(self, metadata: dict, labelled: bool) -> "Dataset":
        """This dataset prepared to feed a trained model (mode=evaluate|predict).

        Args:
            metadata: the model's metadata (export metadata or run.json's data block), e.g. the
                encoding fitted at training time, which must be applied unchanged.
            labelled: False when the label may be absent (predict).
        """
        return self

    def keys(self, config, key: str) -> np.ndarray:
        """The value of feature/column `key` for every record in global order (for hash sharding)."""
        from scaleflow.errors import ConfigError

        raise ConfigError("data.shard_key", key, f"a key the {self.name} dataset provides",
                          f"The {self.name} dataset cannot shard by key; use data.shard_key=null")

    @abc.abstractmethod
    def read(self, config, files: Sequence[str] | None = None) -> Any:
        """The records as tf.data.

        Args:
            config: the `data` config node.
            files: the files to read (a subset of `describe(...).files`), or None for all.
        Returns:
            A tf.data.Dataset of (features, label) in global order.
        """

    def index_format(self, config) -> tuple[list[str], Any] | None:
        """(data files, `index.IndexFormat`) that `mode=index` builds ahead of time (the same indexes
        `describe` would), or None when this dataset keeps no per-file index."""
        return None

    def read_records(self, config, files: Sequence[str], records: Sequence[np.ndarray]) -> Any:
        """Only the records `records[i]` (sorted ids local to `files[i]`) as tf.data of (features, label)
        in that order, read by offset: called at record level when `describe` set `extra["seek"]`
        (the source knows where each record is, e.g. from an index), so a pipeline reads 1.0x."""
        raise NotImplementedError(f"the {self.name} dataset cannot read records by offset")

    def read_raw(self, config) -> tuple[Callable[[Sequence[str]], Any], Callable[[Any], Any]] | None:
        """(read, decode) when this source can split reading from decoding, else None (the default).

        `read(files)` is a tf.data.Dataset of raw records (e.g. serialized examples) in the order
        `read(config, files)` yields them decoded; `decode(batch of raw records)` -> the (features,
        label) batch `read` would have given for them. With `data.service` the input pipeline batches
        raw records and decodes after the service's shard, so each service worker decodes only its own
        batches. Both must be pure TensorFlow (no Python functions): they run on the service workers.
        """
        return None

    def read_selected(self, config, files: Sequence[str], keep: np.ndarray) -> Any:
        """The records of `files` whose position in their concatenated order is True in `keep`, or None
        when this dataset cannot select more cheaply than the generic filter of a whole read.

        Called at record level by scan (no `extra["seek"]`): a reader that reads in units (Parquet row
        groups) skips the units without a kept record and filters the others before TensorFlow sees
        them; what it reads is still reported as every record of each file (unit) it opens.

        Args:
            config: the `data` config node.
            files: the files to read (a subset of `describe(...).files`), in order.
            keep: one bool per record of `files` (positions past its end are not kept).
        Returns:
            A tf.data.Dataset of (features, label) of the kept records in order, or None.
        """
        return None

    def gather_arrays(self, config, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of the records at `indices`, for in-memory datasets (`in_memory`)."""
        raise NotImplementedError(f"the {self.name} dataset is not held in memory")

    def explain_read_error(self, config, error: BaseException, files: Sequence[str] | None = None):
        """A `DataError` naming the file (and record) behind `error`, a TensorFlow error raised while
        training read the data, or None when this dataset cannot tell. TensorFlow's reader errors
        ("corrupted record at 12", "Unknown image file format") do not name the file."""
        return None

    def take(self, config, indices: np.ndarray) -> Any:
        """(features, label) for the records at `indices`, in global order. The default filters a
        read that stops after the last wanted record; in-memory datasets gather directly."""
        import tensorflow as tf

        indices = np.asarray(indices, dtype=np.int64)
        last = int(indices.max()) + 1 if len(indices) else 0
        mask = np.zeros(last, dtype=bool)
        mask[indices] = True
        keep = tf.constant(mask)

        def selected(index, record):
            return keep[index]

        def record_only(index, record):
            return record

        return self.read(config).take(last).enumerate().filter(selected).map(record_only)


class InMemoryDataset(Dataset):
    """A dataset held as NumPy arrays: `arrays(config) -> (features, raw labels)`; the task turns the
    raw labels into targets (`label_names` names label columns, `where` names a record in errors)."""

    in_memory = True
    _cache: ClassVar[dict] = {}

    @abc.abstractmethod
    def arrays(self, config) -> tuple[np.ndarray, np.ndarray]:
        """All records.

        Args:
            config: the `data` config node.
        Returns:
            (features [N, ...] float32, labels [N] integer class ids), in global order.
        """

    def cache_token(self) -> str:
        """What, beside the config, changes this dataset's arrays (e.g. a fitted encoding)."""
        return ""

    def label_names(self, config) -> list[str] | None:
        """Names of the label columns (e.g. regression targets), when the source has them."""
        return None

    def where(self, config, index: int) -> str:
        """Record `index` as a person finds it in the source (e.g. 'row 7 of data.csv')."""
        return f"record {index}"

    def min_classes(self, config) -> int:
        return 0

    def reads_labels(self) -> bool:
        """False when the labels are placeholders nobody reads (mode=predict on unlabelled data)."""
        return True

    def _encoded(self, config):
        key = (self.name, self.task.name, self.cache_token(),
               repr(sorted((k, repr(v)) for k, v in dict(config).items())))
        if key not in self._cache:
            x, labels = self.arrays(config)
            self.check_finite(config, x)
            if self.reads_labels():
                targets = self.task.encode(labels, config, key=self.label_key, where=lambda i: self.where(config, i),
                                           names=self.label_names(config), min_classes=self.min_classes(config))
            else:
                from scaleflow.tasks.base import Targets

                targets = Targets(np.zeros(len(x), dtype=np.int32))
            self._cache.clear()  # hold one dataset at a time
            self._cache[key] = (np.ascontiguousarray(x), targets)
        return self._cache[key]

    def _arrays(self, config) -> tuple[np.ndarray, np.ndarray]:
        x, targets = self._encoded(config)
        return x, targets.y

    def check_finite(self, config, x: np.ndarray) -> None:
        """NaN or inf in an input trains "successfully" into a NaN model: name the first one."""
        found = first_non_finite(x)
        if found is not None:
            record, position = found
            raise DataError(config.get("path") or f"data={self.name}",
                            f"record {record}, feature {self.feature_name(config, position)}: "
                            f"{x[record][position]} is not a finite number", record=record,
                            hint="Fix or drop that record: inputs must be finite")

    def feature_name(self, config, position: tuple[int, ...]) -> str:
        """How an error names the feature at `position` (an index into one record's features)."""
        return ",".join(map(str, position))

    def describe(self, config) -> DataInfo:
        x, targets = self._encoded(config)
        digest = hashlib.sha256()
        digest.update(str((x.shape, x.dtype.str)).encode())
        digest.update(x.tobytes())
        digest.update(targets.y.tobytes())
        return DataInfo(num_examples=len(x), input_shape=tuple(x.shape[1:]), num_classes=targets.num_classes,
                        fingerprint=digest.hexdigest()[:16], class_names=targets.class_names,
                        target_names=targets.target_names)

    def read(self, config, files=None):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self._arrays(config))

    def take(self, config, indices: np.ndarray):
        import tensorflow as tf

        x, y = self._arrays(config)
        return tf.data.Dataset.from_tensor_slices((x[indices], y[indices]))

    def gather_arrays(self, config, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._arrays(config)
        return x[indices], y[indices]


NON_FINITE = "scaleflow: non-finite input feature"  # the check_numerics message streamed readers use


def first_non_finite(x: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """(record, position within the record) of the first NaN or inf in `x`, or None."""
    if x.dtype.kind not in "fc" or not x.size:
        return None
    finite = np.isfinite(x)
    if finite.all():
        return None
    index = np.unravel_index(int(np.argmin(finite.reshape(-1))), x.shape)
    return int(index[0]), tuple(int(i) for i in index[1:])


def file_fingerprint(paths: Sequence[str]) -> str:
    """Cheap fingerprint of files: names, sizes and modification times."""
    import os

    digest = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        digest.update(f"{os.path.basename(p)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return digest.hexdigest()[:16]
