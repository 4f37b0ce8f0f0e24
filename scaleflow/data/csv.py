"""A CSV file with a header row: a label column, numeric and categorical features, an optional key.

The file is read and checked with NumPy during config validation (see data/tabular.py), so a ragged
line, a header without records, a non-numeric or infinite value, or a missing cell is a data error
naming the file, line, record and column, before TensorFlow starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional

import numpy as np

from scaleflow.config.schema import DataConfig, bounded, choice, items
from scaleflow.data.base import DataInfo, InMemoryDataset
from scaleflow.data.sharding import split_indices
from scaleflow.data.tabular import (TableEncoding, class_ids, describe_encoding, fit_encoding,
                                    labels_present, read_table)
from scaleflow.errors import ConfigError, did_you_mean, one_of
from scaleflow.tasks.labels import as_number


@dataclass
class CSVConfig(DataConfig):
    label_column: str = "label"
    feature_columns: Optional[List[str]] = None  # None: every column except the label, ignored ones and the key
    ignore_columns: List[str] = items([])  # e.g. ids, free text; data.shard_key is never a feature either
    categorical_columns: List[str] = items([])  # string columns encoded one-hot (vocabulary: training split)
    missing: str = choice("error", "error", "mean", "zero")  # what an empty / NA cell becomes
    max_categories: int = bounded(1000, min=2)
    delimiter: str = ","


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

    @classmethod
    def validate(cls, cfg) -> None:
        super().validate(cfg)
        if cfg.get("mode", "train") == "train":
            from scaleflow.tasks import get

            cls(task=get(cfg)).describe(cfg.data)  # every data problem (labels too) is found here, before TF

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
                               "class_names": [str(c) for c in encoding.classes] if encoding.classes else None})

    def keys(self, config, key):
        table = _table(config)
        if key not in table.header:
            raise ConfigError("data.shard_key", key, one_of(table.header) + f" (columns of {config.path})",
                              did_you_mean(key, table.header))
        return table.column(key).astype(str)
