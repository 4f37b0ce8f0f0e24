"""TFRecord files of tf.train.Example."""

from __future__ import annotations

import glob
import logging
import math
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from scaleflow.config.schema import DataConfig
from scaleflow.data.base import NON_FINITE, DataInfo, Dataset, file_fingerprint, first_non_finite
from scaleflow.data.tfrecord_format import RecordError, count_records, feature_value, locate_corruption, records
from scaleflow.data.tfrecord_index import TFRecordIndex, byte_ranges, check_payloads, column, int_column
from scaleflow.errors import ConfigError, DataError, one_of

log = logging.getLogger("scaleflow")


@dataclass
class TFRecordConfig(DataConfig):
    # name -> {shape: [..], dtype: float32|int64}; several features are flattened and concatenated.
    features: Dict[str, Any] = field(default_factory=lambda: {"x": {"shape": [32], "dtype": "float32"}})
    label: str = "label"
    num_classes: Optional[int] = None  # None: max label + 1, found by scanning the files (multilabel: required)
    targets: int = 1  # task=regression: values of the float label feature per record
    compression: str = ""  # "" | GZIP | ZLIB


def kept_features(config) -> dict:
    """`data.features` without those `data.mask` drops."""
    from scaleflow.data.mask import rules

    dropped = {r.column for r in rules(config) if r.method == "drop"}
    return {name: spec for name, spec in config.features.items() if name not in dropped}


# Kept records closer than this share one read (the bytes between are read and dropped), as Arrow's
# read coalescing does (its hole_size_limit): one system call costs about as much as copying 8 KiB.
SEEK_GAP = 8 << 10


def seek_problem(config) -> str | None:
    """Why the records of an indexed TFRecord set cannot be read by offset, or None."""
    if config.compression:
        return (f"data.compression={config.compression}: the offsets count uncompressed bytes and a compressed "
                "stream cannot be entered at an offset, so record-level shards are read by scan")
    if str(config.get("service") or "off") != "off":  # the seek reader is Python (tf.numpy_function)
        return (f"data.service={config.service}: a tf.data service worker cannot run the Python seek reader, "
                "so record-level shards are read by scan there")
    return None


def list_files(path: str) -> list[str]:
    """A file, every file in a directory, or a glob; sorted so every process agrees on the order."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in os.listdir(path) if not f.startswith(".")]
    else:
        files = glob.glob(path)
    return sorted(f for f in files if os.path.isfile(f))


class TFRecord(Dataset):
    """tf.train.Example records; record order is file by file (files sorted), then record order.

    Example: `python -m scaleflow data=tfrecord data.path='data/train-*.tfrecord'
    data.features='{pixels: {shape: [784], dtype: float32}}' data.label=digit`
    """

    name = "tfrecord"
    Config = TFRecordConfig
    path_kind = "exists"
    label_key = "data.label"

    @classmethod
    def validate(cls, cfg) -> None:
        super().validate(cfg)
        for fname, spec in cfg.data.features.items():
            dtype = spec.get("dtype", "float32")
            if dtype not in ("float32", "int64"):
                raise ConfigError(f"data.features.{fname}.dtype", dtype, one_of(("float32", "int64")))
            shape = list(spec.get("shape", []))
            if any(not isinstance(d, int) or d < 1 for d in shape):
                raise ConfigError(f"data.features.{fname}.shape", shape, "a list of integers >= 1")

    def describe(self, config) -> DataInfo:
        files = list_files(config.path)
        compression = config.compression or ""
        task = self.task.name
        num_classes = config.num_classes
        class_names: tuple = ()
        target_names: tuple = ()
        try:  # the framing of every file is checked here (or when indexed), so a bad file is named before training
            indexes = self._indexes(config, files)
            if indexes is not None:
                counts = tuple(ix.meta["records"] for ix in indexes)
            else:
                counts = tuple(count_records(f, compression) for f in files)
            if task == "regression":
                target_names = tuple(["target"] if config.targets == 1 else
                                     [f"target_{j}" for j in range(config.targets)])
            elif task == "multilabel":
                if num_classes is None:
                    raise ConfigError("data.num_classes", None, "the number of labels (the int64 label feature's "
                                      "length) for task=multilabel")
                class_names = tuple(config.class_names or [f"label_{j}" for j in range(num_classes)])
            elif num_classes is None or task == "binary":
                targets = None
                distinct = _distinct_labels(indexes, config.label)
                if distinct is not None:  # the classes follow from the distinct labels alone
                    try:
                        targets = self.task.encode(distinct, config, key="data.label", min_classes=num_classes or 0)
                    except ConfigError:
                        targets = None  # encode every label below, so the error names the record
                if targets is None:
                    labels = self._feature_values(config, files, config.label, indexes)
                    if not isinstance(labels, np.ndarray):
                        missing = [i for i, v in enumerate(labels) if v is None]
                        if missing:
                            raise ConfigError("data.label", config.label, "an int64 feature present in every "
                                              "record", f"Record {missing[0]} has none")
                        labels = np.array(labels)
                    targets = self.task.encode(labels, config, key="data.label", min_classes=num_classes or 0)
                num_classes, class_names = targets.num_classes, targets.class_names
            else:
                class_names = tuple(config.class_names or [str(c) for c in range(num_classes)])
        except RecordError as e:
            raise _data_error(e) from None
        shapes = [list(spec.get("shape", [])) for spec in kept_features(config).values()]  # data.mask drops
        if len(shapes) == 1 and shapes[0]:
            input_shape = tuple(shapes[0])
        else:
            input_shape = (sum(max(1, math.prod(s)) for s in shapes),)
        return DataInfo(num_examples=sum(counts), input_shape=input_shape, num_classes=num_classes or 0,
                        fingerprint=file_fingerprint(files), files=tuple(files), file_records=counts,
                        class_names=class_names, target_names=target_names,
                        extra={"index": dict(self._index_report), "seek": self._index_report.get("seek", False)})

    def keys(self, config, key):
        files = list_files(config.path)
        try:
            values = self._feature_values(config, files, key, self._indexes(config, files, key=key))
        except RecordError as e:
            raise _data_error(e) from None
        values = values.tolist() if isinstance(values, np.ndarray) else values
        if values and all(v is None for v in values):
            raise ConfigError("data.shard_key", key, "a feature present in the records")
        from scaleflow.data.mask import Masking, mask_keys

        keys = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
        return mask_keys(keys, Masking.from_config(config), key)  # a hashed key: pseudonyms only

    # ------------------------------------------------------------------------------- the index
    def _index_format(self, config, key: str | None = None) -> TFRecordIndex:
        """The features indexed: the label (classification, binary: with its histogram) and the shard
        key, except masked ones (an index must not keep what data.mask hides)."""
        from scaleflow.data.mask import rules

        masked = {r.column for r in rules(config)}
        columns = []
        labelled = self.task.name in ("classification", "binary") and config.label not in masked
        if labelled:
            columns.append(config.label)
        for name in (config.get("shard_key"), key):
            if name and name not in masked and name not in columns:
                columns.append(name)
        return TFRecordIndex(config.compression or "", tuple(columns), config.label if labelled else None)

    def index_format(self, config):
        return list_files(config.path), self._index_format(config)

    def _indexes(self, config, files, key: str | None = None):
        """Each file's index (read, or built once), or None when data.index=off or the data is
        encrypted (an index would keep its labels and keys in clear); `_index_report` says which."""
        from scaleflow.data.index import IndexOptions, log_summary, open_indexes, summary
        from scaleflow.security.crypto import is_encrypted

        options = IndexOptions.from_config(config)
        fmt = self._index_format(config, key)
        if not options.enabled:
            self._index_report = {"used": False, "why": "data.index=off", "seek": False}
            return None
        if any(is_encrypted(f) for f in files):
            self._index_report = {"used": False, "why": "encrypted data: an index would keep labels and keys in "
                                  "clear", "seek": False}
            return None
        cache_key = (tuple(files), fmt, options)
        cached = getattr(self, "_opened", None)
        if cached is not None and cached[0] == cache_key:
            return cached[1]
        started = time.perf_counter()
        indexes = open_indexes(files, fmt, options)
        report = summary(indexes, options, time.perf_counter() - started)
        log_summary(report)
        if fmt.histogram:
            total: dict = {}
            for ix in indexes:
                for value, count in ix.meta.get("histograms", {}).get(fmt.histogram, {}).items():
                    total[value] = total.get(value, 0) + count
            report["label_histogram"] = dict(sorted(total.items(), key=lambda kv: int(kv[0])))
        seek_why = seek_problem(config)
        report.update(seek=seek_why is None, **({"seek_why": seek_why} if seek_why else {}))
        if seek_why:
            log.info("index: %s", seek_why)
        self._index_report = report
        self._opened = (cache_key, indexes)
        return indexes

    def _feature_values(self, config, files, name: str, indexes):
        """Feature `name`'s first value in every record (an int64 array when indexed and all ints,
        else a list with None where absent): from the indexes when they hold it, else by scan."""
        if indexes is not None and all(name in ix.meta["columns"] for ix in indexes):
            values = int_column(indexes, name)
            if values is None:
                values = column(indexes, name)
            if values is not None:
                return values
        return [v for f in files for v in _values(f, config.compression or "", name)]

    def take(self, config, indices):
        """The records at global `indices`, read by offset when the files are indexed (else the base
        class's filtered scan, which reads every record up to the last one wanted)."""
        files = list_files(config.path)
        indexes = self._indexes(config, files)
        if indexes is None or seek_problem(config) is not None:
            return super().take(config, indices)
        starts = np.concatenate([[0], np.cumsum([ix.meta["records"] for ix in indexes], dtype=np.int64)])
        wanted = np.unique(np.asarray(indices, dtype=np.int64))
        owner = np.searchsorted(starts, wanted, side="right") - 1
        opened = np.unique(owner)
        return self.read_records(config, [files[f] for f in opened], [wanted[owner == f] - starts[f] for f in opened])

    def read_records(self, config, files, records):
        """The records `records[i]` (sorted local ids) of `files[i]`, read by byte range from the
        index's offsets (only those records are read and parsed), as (features, label) in order."""
        import tensorflow as tf

        from scaleflow.data.index import CorruptIndex
        from scaleflow.data.seek import read_chunks

        indexes = self._indexes(config, list_files(config.path))
        by_path = {ix.path: ix for ix in indexes}
        chunks, chunk_records = [], []
        for i, (path, local) in enumerate(zip(files, records)):
            arrays = by_path[path].arrays
            try:
                offsets, lengths = arrays["offsets"], arrays["lengths"]  # read from the index file now
            except CorruptIndex as e:  # rebuilt by another process since describe: the file changed
                raise DataError(path, f"its index changed while this run used it ({e})",
                                hint="Is something rewriting the data? Run again once it is stable") from None
            found = byte_ranges(offsets, lengths, local, file=i, max_gap=SEEK_GAP)
            cut = np.cumsum([0] + [len(c.positions) for c in found])
            chunks += found
            chunk_records += [np.asarray(local)[a:b] for a, b in zip(cut[:-1], cut[1:])]

        def check(path, blob, chunk, number):
            check_payloads(path, blob, chunk, chunk_records[number])

        ds = read_chunks(list(files), chunks, check).map(self._parser(config), num_parallel_calls=tf.data.AUTOTUNE,
                                                          deterministic=True)
        return ds.map(self._batch_targets).unbatch()

    def explain_read_error(self, config, error: BaseException, files=None):
        """A payload checksum error found by TensorFlow mid-epoch does not name the file: find it."""
        import tensorflow as tf

        if not isinstance(error, (tf.errors.DataLossError, tf.errors.InvalidArgumentError)):
            return None
        if NON_FINITE in str(error):  # raised by read()'s check: find the record in Python
            return self._locate_non_finite(config, list(files) if files is not None else list_files(config.path))
        for f in list(files) if files is not None else list_files(config.path):
            found = locate_corruption(f, config.compression or "")
            if found is not None:
                return _data_error(found)
        return None

    def read(self, config, files=None):
        import tensorflow as tf

        files = list(files) if files is not None else list_files(config.path)
        from scaleflow.security.crypto import tensorflow_path  # encrypted: decrypted into TF's ram://

        ds = tf.data.TFRecordDataset([tensorflow_path(f) for f in files], compression_type=config.compression or None)
        ds = ds.batch(256).map(self._parser(config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.map(self._batch_targets).unbatch()  # targets as the task's loss expects

    def read_raw(self, config):
        """Serialized examples, and their batched parser (data.service decodes after its shard)."""
        import tensorflow as tf

        from scaleflow.security.crypto import tensorflow_path

        parse, targets = self._parser(config), self.task.tf_targets

        def read(files):
            return tf.data.TFRecordDataset([tensorflow_path(f) for f in files], compression_type=config.compression or None)

        def decode(records):
            x, y = parse(records)
            return x, tf.vectorized_map(targets, y)  # tf_targets takes one record's label

        return read, decode

    def _batch_targets(self, x, y):
        """(features, targets) of a parsed batch: the task's per-record `tf_targets` vectorized over
        the batch, so no function runs per record (a per-record map costs more than the parsing)."""
        import tensorflow as tf

        return x, tf.vectorized_map(self.task.tf_targets, y)

    def _parser(self, config, check_finite: bool = True):
        """records (a batch) -> (features, labels). NaN or inf in a feature stops the read with
        NON_FINITE (TensorFlow cannot say which file); explain_read_error then names the record."""
        import tensorflow as tf

        features = kept_features(config)  # data.mask: dropped features are never parsed
        spec = {name: tf.io.FixedLenFeature(list(s.get("shape", [])), getattr(tf, s.get("dtype", "float32")))
                for name, s in features.items()}
        task = self.task.name
        label_shape = {"regression": [config.targets], "multilabel": [config.num_classes or 1]}.get(task, [])
        spec[config.label] = tf.io.FixedLenFeature(label_shape, tf.float32 if task == "regression" else tf.int64)
        names = list(features)
        single = len(names) == 1 and list(features[names[0]].get("shape", []))
        from scaleflow.data.mask import Masking, tensorflow_feature_masks

        masks = tensorflow_feature_masks(Masking.from_config(config), list(config.features), config.get("shard_key"))

        def parse(records):  # a batch at a time: parse_example is much faster than per record
            example = tf.io.parse_example(records, spec)
            for name, mask in masks.items():  # bucket / noise, before anything else sees the values
                example[name] = mask(tf.cast(example[name], tf.float32))
            label = example[config.label]
            if single:
                x = tf.cast(example[names[0]], tf.float32)
            else:
                x = tf.concat([tf.reshape(tf.cast(example[n], tf.float32), [tf.shape(records)[0], -1])
                               for n in names], axis=1)
            return (tf.debugging.check_numerics(x, NON_FINITE) if check_finite else x), label

        return parse

    def _locate_non_finite(self, config, files) -> DataError | None:
        import tensorflow as tf

        parse = self._parser(config, check_finite=False)
        for path in files:
            first = 0
            for x, _ in tf.data.TFRecordDataset([path], compression_type=config.compression or None) \
                    .batch(1024).map(parse):
                found = first_non_finite(x.numpy())
                if found is not None:
                    record, position = found
                    return DataError(path, f"record {first + record}, feature {self._feature_at(config, position)}: "
                                     f"{x.numpy()[record][position]} is not a finite number", record=first + record,
                                     hint="Fix or drop that record: inputs must be finite")
                first += int(x.shape[0])
        return None

    @staticmethod
    def _feature_at(config, position: tuple[int, ...]) -> str:
        """The feature name (and index within it) at `position` of the concatenated features."""
        names = list(kept_features(config))
        shapes = [list(kept_features(config)[n].get("shape", [])) for n in names]
        if len(names) == 1 and shapes[0]:
            return f"{names[0]}[{', '.join(map(str, position))}]"
        flat = position[0] if position else 0
        for name, shape in zip(names, shapes):
            size = max(1, math.prod(shape))
            if flat < size:
                return f"{name}[{flat}]" if shape else name
            flat -= size
        return str(position)


def _distinct_labels(indexes, label: str) -> np.ndarray | None:
    """The distinct values of the label over every file, from the indexes' histograms, when every
    record has an int label (else None: the labels are read one by one)."""
    if indexes is None:
        return None
    distinct: set = set()
    for ix in indexes:
        histogram = ix.meta.get("histograms", {}).get(label)
        if histogram is None or sum(histogram.values()) != ix.meta["records"]:
            return None
        distinct.update(int(v) for v in histogram)
    return np.array(sorted(distinct), dtype=np.int64)


def _values(path: str, compression: str, name: str):
    """Feature `name` of every record of `path`; a payload that is not a tf.train.Example is named."""
    for index, (offset, record) in enumerate(records(path, compression)):
        try:
            yield feature_value(record, name)
        except (ValueError, IndexError, struct.error):
            raise RecordError(path, index, offset, "not a tf.train.Example (corrupt payload)") from None


def _data_error(e: RecordError) -> DataError:
    return DataError(e.path, f"record {e.record} (byte {e.offset}): {e.problem}", record=e.record,
                     hint="Replace or regenerate this file, or remove it from data.path")
