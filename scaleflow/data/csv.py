"""A CSV file with a header row: one label column and numeric feature columns."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from scaleflow.config.schema import DataConfig
from scaleflow.data.base import InMemoryDataset, label_ids
from scaleflow.errors import ConfigError, did_you_mean, one_of


@dataclass
class CSVConfig(DataConfig):
    label_column: str = "label"
    feature_columns: Optional[List[str]] = None  # None: every column except the label
    delimiter: str = ","


class CSV(InMemoryDataset):
    """Rows of a CSV file; record i is data row i.

    Example: `python -m scaleflow data=csv data.path=iris.csv data.label_column=species`
    """

    name = "csv"
    Config = CSVConfig
    path_kind = "file"

    def _table(self, config) -> tuple[list[str], np.ndarray]:
        with open(config.path, newline="") as f:
            reader = csv.reader(f, delimiter=config.delimiter)
            header = next(reader, None)
            if header is None:
                raise ConfigError("data.path", config.path, "a CSV file with a header row", "The file is empty")
            rows = [row for row in reader if row]
        return [h.strip() for h in header], np.array(rows, dtype=object).reshape(len(rows), len(header))

    def _column(self, header: list[str], name: str, key: str) -> int:
        if name not in header:
            raise ConfigError(key, name, one_of(header) + " (columns of the CSV header)", did_you_mean(name, header))
        return header.index(name)

    def arrays(self, config):
        header, table = self._table(config)
        label = self._column(header, config.label_column, "data.label_column")
        names = list(config.feature_columns) if config.feature_columns else [h for h in header if h != header[label]]
        columns = [self._column(header, n, "data.feature_columns") for n in names]
        try:
            x = table[:, columns].astype(np.float32)
        except ValueError as e:
            raise ConfigError("data.feature_columns", names, "numeric columns", f"{e}") from None
        y, _ = label_ids(table[:, label].tolist())
        return x, y

    def keys(self, config, key):
        header, table = self._table(config)
        return table[:, self._column(header, key, "data.shard_key")].astype(str)
