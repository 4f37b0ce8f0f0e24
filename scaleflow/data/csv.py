"""A CSV file with a header row: a label column, numeric and categorical features, an optional key.

The file is read and checked with NumPy during config validation (see data/tabular.py), so a ragged
line, a header without records, a non-numeric or infinite value, or a missing cell is a data error
naming the file, line, record and column, before TensorFlow starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from scaleflow.config.schema import bounded, choice
from scaleflow.data.base import DataInfo, InMemoryDataset
from scaleflow.data.columnar import ColumnsConfig
from scaleflow.data.sharding import split_indices
from scaleflow.data.tabular import (TableEncoding, class_ids, describe_encoding, fit_encoding,
                                    labels_present, read_table)
from scaleflow.errors import ConfigError, did_you_mean, one_of
from scaleflow.tasks.labels import as_number


@dataclass
class CSVConfig(ColumnsConfig):
    delimiter: str = ","
    # auto: files up to in_memory_max_mb are read into memory, larger ones streamed in blocks
    # (csv_stream.py); true | false force one reader. The records and shards are the same either way.
    in_memory: Any = choice("auto", "auto", True, False)
    in_memory_max_mb: float = bounded(32.0, min=0.0)


def _table(config):
    """The file's table, masked as `data.mask` says (before anything else reads it)."""
    from scaleflow.data.mask import Masking

    return read_table(config.path, config.delimiter, mask=Masking.from_config(config))


class CSV(InMemoryDataset):
    """Rows of a CSV file; record i is data row i.

    Args:
        encoding: a fitted encoding to apply unchanged (a trained model's, for evaluate/predict);
            None fits one on the training split.
        require_label: False: labels are not read at all, the column may be absent or have empty
            cells (mode=predict).

    Example: `python -m scaleflow data=csv data.path=iris.csv data.label_column=species`
    """

    name = "csv"
    Config = CSVConfig
    path_kind = "file"
    label_key = "data.label_column"

    def __init__(self, task=None, encoding: TableEncoding | None = None, require_label: bool = True):
        super().__init__(task)
        self.encoding, self.require_label = encoding, require_label
        self._streamer = None  # (config key, StreamingCSV or None, why)

    def streaming(self, config):
        """The streamed reader when this config streams the file (`data.in_memory`), else None."""
        key = (config.path, config.get("in_memory", "auto"), config.get("in_memory_max_mb", 32.0),
               bool(config.get("mask")), self.task.name)
        if self._streamer is None or self._streamer[0] != key:
            stream, why = reader_choice(config, self.task.name)
            streamer = None
            if stream:
                from scaleflow.data.csv_stream import StreamingCSV

                streamer = StreamingCSV(self.task, self.encoding, self.require_label, self.label_key)
            self._streamer = (key, streamer, why)
        self.in_memory = self._streamer[1] is None  # what input_fn, scoring and explain ask
        return self._streamer[1]

    @classmethod
    def validate(cls, cfg) -> None:
        super().validate(cfg)
        cls.check_reader(cfg)
        if cfg.get("mode", "train") == "train":
            from scaleflow.tasks import get

            cls(task=get(cfg)).describe(cfg.data)  # every data problem (labels too) is found here, before TF

    @classmethod
    def check_reader(cls, cfg) -> None:
        """data.in_memory=false where only the in-memory reader works is a ConfigError (before TF)."""
        from scaleflow.data.service_config import check_in_process_reader
        from scaleflow.tasks import get

        streams, why = reader_choice(cfg.data, get(cfg).name)
        if streams:
            check_in_process_reader(cfg, f"a streamed CSV ({why})", "data.in_memory=true reads it into memory")

    def for_inference(self, metadata: dict, labelled: bool) -> "CSV":
        encoding = metadata.get("encoding")
        return CSV(task=self.task, encoding=TableEncoding.from_dict(encoding) if encoding else None,
                   require_label=labelled)

    def cache_token(self) -> str:
        return repr((self.encoding.to_dict() if self.encoding else None, self.require_label))

    _prepared: ClassVar[dict] = {}  # the last prepared table: validation, describe and read share it

    def prepare(self, config) -> tuple[TableEncoding, np.ndarray, np.ndarray, dict]:
        """(encoding, inputs, labels, report): raw label text for the task to read, or class ids under
        a trained model's class list. Without a given encoding it is fitted on the
        training split (the same seeded split the pipeline uses), so no validation value leaks in."""
        table = _table(config)
        key = (repr(sorted((k, repr(v)) for k, v in dict(config).items())), self.cache_token(), self.task.name)
        hit = CSV._prepared.get(key)
        if hit is None or hit[0] is not table:
            CSV._prepared.clear()
            CSV._prepared[key] = hit = (table, self._prepare(config, table))
        return hit[1]

    def _prepare(self, config, table) -> tuple[TableEncoding, np.ndarray, np.ndarray, dict]:
        encoding = self.encoding
        parsed: dict = {}
        if encoding is None:
            train, _ = split_indices(table.num_records, config.validation_split, config.seed)
            encoding = fit_encoding(table, config, train, require_label=self.require_label, parsed=parsed)
            label = encoding.label
        else:  # a trained model's encoding: only its feature columns (and the label, if needed) must exist
            label = config.label_column if config.label_column in table.header else None
            if label is None and self.require_label:
                raise ConfigError("data.label_column", config.label_column, one_of(table.header) +
                                  f" (columns of {config.path})", did_you_mean(config.label_column, table.header))
        x, report = encoding.encode(table, trained=self.encoding is not None, parsed=parsed)
        if label is None or not self.require_label:  # predict: placeholder labels nobody reads
            y = np.zeros(table.num_records, dtype=np.int32)
        elif self.encoding is None or self.encoding.classes is None:
            # The task reads them (ids kept, names mapped, bad ones named); for multilabel an empty cell is
            # a record without any label, not a missing one.
            y = table.column(label) if self.task.name == "multilabel" else labels_present(table, label)
        else:  # a trained model's classes: the same label gets the same id
            y = class_ids(table, label, labels_present(table, label), self.encoding.classes)
        return encoding, x, y, report

    def arrays(self, config):
        _, x, y, _ = self.prepare(config)
        return x, y

    def min_classes(self, config) -> int:
        # Under a trained model's class list (evaluate), a subset of its classes is fine.
        return len(self.encoding.classes) if self.encoding is not None and self.encoding.classes else 0

    def reads_labels(self) -> bool:
        return self.require_label

    def where(self, config, index):
        return f"{config.path} line {int(read_table(config.path, config.delimiter).lines[index])} (record {index})"

    def describe(self, config) -> DataInfo:
        streamer = self.streaming(config)
        if streamer is not None:
            info = streamer.describe(config)
            info.extra["reader"]["why"] = self._streamer[2]
            return info
        return self._describe_in_memory(config)

    def read(self, config, files=None):
        streamer = self.streaming(config)
        return streamer.read(config) if streamer is not None else super().read(config, files)

    def take(self, config, indices: np.ndarray):
        streamer = self.streaming(config)
        return streamer.take(config, indices) if streamer is not None else super().take(config, indices)

    def index_format(self, config):
        """mode=index builds a streamed CSV's index (blocks and description) ahead of time."""
        streamer = self.streaming(config)
        return ([config.path], streamer.index_format(config)[0]) if streamer is not None else None

    def explain_read_error(self, config, error: BaseException, files=None):
        streamer = self.streaming(config)
        return streamer.explain_read_error(config, error) if streamer is not None else None

    def _describe_in_memory(self, config) -> DataInfo:
        info = super().describe(config)
        encoding, _, raw, report = self.prepare(config)
        if self.encoding is None and encoding.label is not None and self.task.name in ("classification", "binary"):
            # The trained class list, for evaluate/predict to map labels the same way: integer-like labels
            # are their own ids, names are listed in id order.
            numeric = all(as_number(v) is not None for v in raw.tolist())
            encoding.classes = list(range(len(info.class_names))) if numeric else list(info.class_names)
        labelled = encoding.label is not None if self.encoding is None else \
            config.label_column in _table(config).header
        if self.encoding is not None:  # a trained model's data: say which columns it does not read
            used = {*encoding.columns, *encoding.ignored, config.label_column, config.get("shard_key")}
            report = {**report, "unused_columns": [c for c in _table(config).header if c not in used]}
        return DataInfo(info.num_examples, info.input_shape, info.num_classes, info.fingerprint,
                        class_names=info.class_names, target_names=info.target_names, extra={"encoding": encoding.to_dict(), "report": describe_encoding(encoding, report),
                               "feature_names": encoding.feature_names, "labelled": labelled,
                               "class_names": [str(c) for c in encoding.classes] if encoding.classes else None,
                               "reader": {"name": "csv", "mode": "in_memory", "why": self._streamer[2]}})

    def keys(self, config, key):
        streamer = self.streaming(config)
        if streamer is not None:
            return streamer.keys(config, key)
        table = _table(config)
        if key not in table.header:
            raise ConfigError("data.shard_key", key, one_of(table.header) + f" (columns of {config.path})",
                              did_you_mean(key, table.header))
        return table.column(key).astype(str)


def reader_choice(config, task: str) -> tuple[bool, str]:
    """(stream the file?, why) under `data.in_memory` (auto | true | false) and `data.in_memory_max_mb`.
    Streaming cannot mask columns, decrypt, or read multilabel rows: `false` with one of those is a
    ConfigError, `auto` then reads into memory."""
    import os

    setting = config.get("in_memory", "auto")
    blocker = None
    if config.get("mask"):
        blocker = "data.mask masks cells in memory"
    elif task == "multilabel":
        blocker = "task=multilabel rows are read in memory"
    else:
        from scaleflow.security.crypto import is_encrypted

        if config.path and os.path.isfile(config.path) and is_encrypted(config.path):
            blocker = "the file is encrypted (decrypted in memory)"
    if setting is True:
        return False, "data.in_memory=true"
    if setting is False:
        if blocker:
            raise ConfigError("data.in_memory", False, "true or auto here", f"The file cannot be streamed: {blocker}")
        return True, "data.in_memory=false"
    limit = float(config.get("in_memory_max_mb", 32.0))
    size = os.path.getsize(config.path) / (1 << 20) if config.path and os.path.isfile(config.path) else 0.0
    if size <= limit:
        return False, f"{size:.1f} MB <= data.in_memory_max_mb={limit:g}"
    if blocker:
        return False, f"{size:.1f} MB > data.in_memory_max_mb={limit:g}, but {blocker}"
    return True, f"{size:.1f} MB > data.in_memory_max_mb={limit:g}"
