"""Parquet files (pyarrow): row groups are the units of file-level sharding, records are sharded within
them at record level, and every read streams row group by row group in bounded memory.

Describing reads the files' footers (row counts, schema, null counts, min/max statistics): O(files),
NumPy and pyarrow only, so `mode=shards` / `mode=plan` never import TensorFlow. Only columns whose
footers cannot answer are read, one column at a time and batch by batch: a string label (its class
names), categorical columns (their vocabulary over the training split), numeric columns with nulls
under `data.missing=mean` (their mean). An integer label with statistics needs no read at all.
A NaN is not counted by Parquet statistics: under `data.missing=error` it stops the read that meets it,
named by file, row group and row.

Record order: files sorted by path, then row groups in file order, then rows. `DataInfo.files` lists
one unit per row group, named `<file>#row_group=<i>`, so the planner assigns row groups to pipelines
at file level (hash keys on `<file relative to the data root>#row_group=<i>`), and at record level a
pipeline opens only the row groups holding one of its records.

Columns are chosen by name exactly as for data=csv (`label_column`, `feature_columns`,
`ignore_columns`, `categorical_columns`, `missing`); the encoding goes to run.json and the export.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from scaleflow.data.base import DataInfo, Dataset, file_fingerprint
from scaleflow.data.columnar import (BatchEncoder, ColumnsConfig, ColumnScan, Where, is_numeric, keep_rows,
                                     ordered_map, targets_spec, tf_records)
from scaleflow.data.tabular import TableEncoding, describe_encoding
from scaleflow.errors import ConfigError, DataError, did_you_mean, one_of

log = logging.getLogger("scaleflow")

UNIT = "#row_group="
BATCH_ROWS = 8192  # rows per Arrow batch handed to TensorFlow


@dataclass
class ParquetConfig(ColumnsConfig):
    pass


def unit_name(path: str, row_group: int) -> str:
    return f"{path}{UNIT}{row_group}"


def parse_unit(name: str) -> tuple[str, int]:
    path, _, row_group = name.rpartition(UNIT)
    return path, int(row_group)


def list_parquet(path: str) -> list[str]:
    """A file, every data file in a directory (Spark's `_SUCCESS`, `.crc` and hidden files skipped),
    or a glob; sorted so every process agrees on the order."""
    import glob

    path = os.path.expanduser(path)
    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in os.listdir(path)]
    else:
        files = glob.glob(path)
    return sorted(f for f in files if os.path.isfile(f) and not os.path.basename(f).startswith((".", "_"))
                  and not f.endswith(".crc"))


def _footer(path: str):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # ArrowInvalid, OSError: not a Parquet file, truncated footer, ...
        raise DataError(path, f"not a readable Parquet file ({str(e).splitlines()[0]})",
                        hint="Remove it from data.path or regenerate it") from None


class Parquet(Dataset):
    """Rows of Parquet files; record i is the i-th row of the files sorted by path.

    Args:
        encoding: a fitted encoding to apply unchanged (a trained model's, for evaluate/predict);
            None fits one on the training split.
        require_label: False: labels are not read at all (mode=predict).

    Example: `python -m scaleflow data=parquet data.path=data/ data.label_column=species data.shard=hash`
    """

    name = "parquet"
    Config = ParquetConfig
    conf = None
    path_kind = "exists"
    label_key = "data.label_column"

    _described: ClassVar[dict] = {}  # the last description: validation, describe and training share it

    def __init__(self, task=None, encoding: TableEncoding | None = None, require_label: bool = True):
        super().__init__(task)
        self.encoding, self.require_label = encoding, require_label
        self._read_error: DataError | None = None

    @classmethod
    def validate(cls, cfg) -> None:
        super().validate(cfg)
        data = cfg.data
        if data.get("mask"):
            raise ConfigError("data.mask", dict(data.mask), "{} for data=parquet",
                              "Masking applies to data=csv, npz and tfrecord; drop the column with "
                              "data.ignore_columns instead")
        encryption = data.get("encryption") or {}
        if encryption.get("key_env") or encryption.get("key_file"):
            raise ConfigError("data.encryption", "a key", "no key for data=parquet",
                              "Encrypted inputs are read by data=csv, npz and tfrecord")
        from scaleflow.data.service_config import check_in_process_reader

        check_in_process_reader(cfg, "data=parquet", "data=tfrecord, npz or an in-memory CSV can use one")
        if cfg.get("mode", "train") == "train":
            from scaleflow.tasks import get

            cls(task=get(cfg)).describe(data)  # every data problem (labels too) is found here, before TF

    def for_inference(self, metadata: dict, labelled: bool) -> "Parquet":
        encoding = metadata.get("encoding")
        return Parquet(task=self.task, encoding=TableEncoding.from_dict(encoding) if encoding else None,
                       require_label=labelled)

    # ---------------------------------------------------------------------------- describing
    def describe(self, config) -> DataInfo:
        files = list_parquet(config.path)
        if not files:
            raise ConfigError("data.path", config.path, "a Parquet file, a directory of them or a glob matching some")
        fingerprint = file_fingerprint(files)
        key = (fingerprint, tuple(files), repr(sorted((k, repr(v)) for k, v in dict(config).items())),
               self.task.name, repr(self.encoding.to_dict() if self.encoding else None), self.require_label)
        if key not in Parquet._described:
            Parquet._described.clear()
            Parquet._described[key] = self._describe(config, files, fingerprint)
        return Parquet._described[key]

    def _describe(self, config, files: list[str], fingerprint: str) -> DataInfo:
        footers = [_footer(f) for f in files]
        schema = footers[0].schema_arrow
        header = list(schema.names)
        for f, footer in zip(files[1:], footers[1:]):
            if list(footer.schema_arrow.names) != header:
                raise DataError(f, f"its columns differ from {files[0]}'s ({', '.join(footer.schema_arrow.names)} "
                                f"vs {', '.join(header)})", hint="Every file of data.path needs the same columns")
        scan = ColumnScan(config.path, header, config, self.task, require_label=self.require_label,
                          encoding=self.encoding, label_key=self.label_key)
        units, counts = [], []
        for f, footer in zip(files, footers):
            for g in range(footer.metadata.num_row_groups):
                units.append((f, g))
                counts.append(footer.metadata.row_group(g).num_rows)
        total = int(sum(counts))
        if not total:
            raise DataError(config.path, "no rows", hint="The Parquet files hold a schema only; add data")
        for c in scan.features:
            field = schema.field(c)
            if c not in scan.categorical and not is_numeric(field.type):
                raise DataError(files[0], f"a column of {field.type}, not numbers", column=c,
                                hint="List it in data.categorical_columns to encode it as categories, or in "
                                     "data.ignore_columns to leave it out")
            for f, footer in zip(files[1:], footers[1:]):
                if footer.schema_arrow.field(c).type != field.type:
                    raise DataError(f, f"type {footer.schema_arrow.field(c).type}, not {field.type} as in {files[0]}",
                                    column=c)
        to_read = self._columns_to_read(scan, footers, schema)
        train_mask = None
        if to_read and scan.needs_training_split():
            train_mask = self._fit_records(config, counts)
        if to_read:
            where = self._where(units, counts)
            first = 0
            for (f, g), footer, n in zip(units, (footers[files.index(u[0])] for u in units), counts):
                for batch in footer.iter_batches(batch_size=65536, row_groups=[g], columns=to_read, use_threads=True):
                    rows = batch.num_rows
                    scan.add(batch, first, where, None if train_mask is None else train_mask[first:first + rows])
                    first += rows
        self._stats_from_footers(scan, footers, [c for c in scan.columns if c not in to_read])
        result = scan.result(num_records_hint=total)
        encoding = result.encoding
        labelled = scan.label is not None
        extra = {"encoding": encoding.to_dict(), "report": describe_encoding(encoding, result.report),
                 "feature_names": encoding.feature_names, "labelled": labelled,
                 "class_names": [str(c) for c in encoding.classes] if encoding.classes else None,
                 "reader": {"name": "parquet", "mode": "streaming", "row_groups": len(units),
                            "columns_read_to_describe": to_read}}
        return DataInfo(num_examples=total, input_shape=(len(encoding.feature_names),), num_classes=result.num_classes,
                        fingerprint=fingerprint, files=tuple(unit_name(f, g) for f, g in units),
                        file_records=tuple(counts), extra=extra, class_names=result.class_names,
                        target_names=result.target_names)

    @staticmethod
    def _fit_records(config, counts: Sequence[int]) -> np.ndarray:
        """Which records vocabularies and means are fitted on: training records of the record-level
        split and, where the planner may pick file level, of the row-group split too (the level
        depends on the number of pipelines, not known here), so no validation record leaks in."""
        from scaleflow.data.rules import record_keyed
        from scaleflow.data.sharding import split_files, split_indices

        total = int(sum(counts))
        train, _ = split_indices(total, config.validation_split, config.seed)
        mask = np.zeros(total, dtype=bool)
        mask[train] = True
        if config.shard_level != "record" and not record_keyed(config):
            train_units, _ = split_files(len(counts), config.validation_split, config.seed)
            units = np.zeros(len(counts), dtype=bool)
            units[train_units] = True
            mask &= np.repeat(units, np.asarray(counts, dtype=np.int64))
        return mask

    @staticmethod
    def _statistics(footers, column: str):
        """Per row group statistics of `column` (None where a row group has none)."""
        out = []
        for footer in footers:
            index = footer.schema_arrow.get_field_index(column)
            meta = footer.metadata
            leaf = [i for i in range(meta.num_columns) if meta.row_group(0).column(i).path_in_schema == column] \
                if meta.num_row_groups else []
            for g in range(meta.num_row_groups):
                if index < 0 or not leaf:
                    out.append(None)
                    continue
                out.append(meta.row_group(g).column(leaf[0]).statistics)
        return out

    def _columns_to_read(self, scan: ColumnScan, footers, schema) -> list[str]:
        """The columns whose footer statistics cannot give what describing needs."""
        import pyarrow as pa

        read = []
        for c in scan.columns:
            stats = self._statistics(footers, c)
            known = all(s is not None and s.has_null_count for s in stats)
            nulls = sum(s.null_count for s in stats) if known else None
            field_type = schema.field(c).type
            if c == scan.label:
                integer = pa.types.is_integer(field_type) or pa.types.is_boolean(field_type)
                if scan.trained is not None or not integer or not known or nulls or \
                        not all(s.has_min_max for s in stats if s is not None):
                    read.append(c)  # names (text labels), a missing label to locate, or no statistics
                elif self.task.name != "regression":
                    scan.label_values.update({int(min(s.min for s in stats)), int(max(s.max for s in stats))})
                    scan.label_numeric = True
                continue
            if c in scan.categorical and scan.trained is None:
                read.append(c)
                continue
            if c in scan.categorical:
                continue
            floating = pa.types.is_floating(field_type)
            infinite = floating and any(s is None or not s.has_min_max or np.isinf(float(s.min)) or
                                        np.isinf(float(s.max)) for s in stats)
            if not known or infinite or (nulls and (scan.policy in ("error", "mean"))):
                read.append(c)  # locate the missing / infinite value, or average the present ones
        return read

    def _stats_from_footers(self, scan: ColumnScan, footers, columns: list[str]) -> None:
        """Missing counts of the columns not read, from the footers' null counts."""
        for c in columns:
            if c in scan.missing_counts:
                scan.missing_counts[c] += sum(s.null_count for s in self._statistics(footers, c) if s is not None)

    @staticmethod
    def _where(units, counts) -> Where:
        offsets = np.concatenate([[0], np.cumsum(counts)])

        def describe(record: int) -> tuple[str, None, str]:
            u = int(np.searchsorted(offsets, record, side="right") - 1)
            f, g = units[u]
            return f, None, f"row group {g}, row {record - int(offsets[u])} (record {record})"

        return Where(describe)

    # ------------------------------------------------------------------------------- reading
    def _encoder(self, config, info: DataInfo) -> BatchEncoder:
        encoding = TableEncoding.from_dict(info.extra["encoding"])
        return BatchEncoder(encoding, self.task, config, info.num_classes,
                            labelled=self.require_label and info.extra.get("labelled", True),
                            path=config.path, label_key=self.label_key)

    def read(self, config, files: Sequence[str] | None = None) -> Any:
        return self._stream(config, files, None)

    def read_selected(self, config, files: Sequence[str], keep: np.ndarray) -> Any:
        """Only the kept records of `files`: a row group without one is never opened, the others are
        decoded and filtered in NumPy before TensorFlow sees them."""
        return self._stream(config, files, np.asarray(keep, dtype=bool))

    def take(self, config, indices: np.ndarray) -> Any:
        indices = np.asarray(indices, dtype=np.int64)
        keep = np.zeros(int(indices.max()) + 1 if len(indices) else 0, dtype=bool)
        keep[indices] = True
        return self._stream(config, None, keep)

    def _stream(self, config, files: Sequence[str] | None, keep: np.ndarray | None) -> Any:
        info = self.describe(config)
        names = list(files) if files is not None else list(info.files)
        index = {name: i for i, name in enumerate(info.files)}
        counts = [info.file_records[index[n]] for n in names]
        encoder = self._encoder(config, info)
        shape, dtype = targets_spec(self.task, config, info.num_classes)
        units = []  # (path, row group, first position in the stream, rows, kept rows mask or None)
        position = 0
        for name, n in zip(names, counts):
            mask = None if keep is None else keep[position:position + n]
            if mask is None or mask.any():
                units.append((name, position, n, mask))
            position += n
            if keep is not None and position >= len(keep):
                break
        if keep is not None:
            log.info("%s: opening %d of %d row group(s) for %d record(s)", config.path, len(units), len(names),
                     int(keep.sum()))
        where_of = self._where([parse_unit(n) for n in info.files], info.file_records)
        first_of = dict(zip(info.files, info.file_offsets[:-1].tolist()))
        dataset = self

        def load(unit):
            name, _, n, mask = unit
            path, group = parse_unit(name)
            out = []
            try:
                reader = _footer(path)
                row = 0
                for batch in reader.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=encoder.columns,
                                                 use_threads=False):
                    start = first_of[name] + row
                    x, y = encoder(batch, lambda r, s=start: where_of.text(s + r))
                    if mask is not None:
                        x, y = keep_rows(mask, row, x, y)
                    row += batch.num_rows
                    if len(x):
                        out.append((x, y))
            except DataError as e:
                dataset._read_error = e
                raise
            return out

        def batches():
            for loaded in ordered_map(load, units, workers=2, ahead=1):
                yield from loaded

        return tf_records(batches, encoder.width, shape, dtype)

    def explain_read_error(self, config, error: BaseException, files=None):
        """A data error found while streaming (e.g. a NaN under data.missing=error) reaches TensorFlow
        as a generator failure: name it as it was found."""
        return self._read_error

    def keys(self, config, key: str) -> np.ndarray:
        files = list_parquet(config.path)
        header = list(_footer(files[0]).schema_arrow.names) if files else []
        if key not in header:
            raise ConfigError("data.shard_key", key, one_of(header) + f" (columns of {config.path})",
                              did_you_mean(key, header))
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = []
        for batch in (b for f in files for b in _footer(f).iter_batches(batch_size=65536, columns=[key])):
            column = batch.column(key)
            if pa.types.is_integer(column.type):
                parts.append(np.asarray(pc.fill_null(column, -1).to_numpy(), dtype=np.int64))
            else:
                parts.append(np.asarray(pc.cast(column, pa.string()).to_pylist(), dtype=object))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
