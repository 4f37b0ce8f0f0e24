"""Columnar sources read as Arrow record batches, in bounded memory: column roles, one streaming pass
of checks and statistics, and the encoding of each batch into model inputs. Shared by `data=parquet`
and the streaming path of `data=csv`; NumPy and pyarrow only (describing never imports TensorFlow).

The roles and the encoding are the CSV dataset's (`tabular.column_roles`, `tabular.TableEncoding`):
the same `label_column`, `feature_columns`, `ignore_columns`, `categorical_columns` (one-hot,
vocabulary from the training split only), `missing` (error | mean | zero) and the same run.json /
export metadata, so a model trained on either source evaluates and predicts on the other.

A source is a list of *units* read in order (a Parquet row group, a block of CSV lines); each unit
yields Arrow record batches. Nothing holds more than a few batches at a time: statistics are
accumulated per batch (sums, distinct values capped at the allowed counts), and reading encodes
batch by batch, the next units decoded on threads while the current one is consumed (pyarrow
releases the GIL while it decodes or parses).
"""

from __future__ import annotations

import concurrent.futures
import itertools
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from scaleflow.config.schema import DataConfig, bounded, choice, items
from scaleflow.data.tabular import MISSING, TableEncoding, _vocabulary, column_roles
from scaleflow.errors import ConfigError, DataError, did_you_mean, one_of


@dataclass
class ColumnsConfig(DataConfig):
    """Keys every table-like dataset shares (data=csv, data=parquet)."""

    label_column: str = "label"
    feature_columns: Optional[List[str]] = None  # None: every column except the label, ignored ones and the key
    ignore_columns: List[str] = items([])  # e.g. ids, free text; data.shard_key is never a feature either
    categorical_columns: List[str] = items([])  # string columns encoded one-hot (vocabulary: training split)
    missing: str = choice("error", "error", "mean", "zero")  # what an empty / NA cell becomes
    max_categories: int = bounded(1000, min=2)


def missing_texts() -> list[str]:
    """Every spelling pyarrow must read as a missing cell: the markers of `tabular.MISSING` in any case."""
    out: set[str] = set()
    for marker in MISSING:
        for cased in itertools.product(*[(c.lower(), c.upper()) if c.isalpha() else (c,) for c in marker]):
            out.add("".join(cased))
    return sorted(out)


def roles(header: Sequence[str], path: str, config, *, require_label: bool = True):
    """(label or None, features, categorical, ignored) of a source whose columns are `header`."""
    return column_roles(SimpleNamespace(header=list(header), path=path), config, require_label=require_label)


def is_numeric(arrow_type) -> bool:
    import pyarrow as pa

    return (pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)
            or pa.types.is_decimal(arrow_type) or pa.types.is_null(arrow_type))


def _numbers(column) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, missing mask) of an Arrow numeric column: null and NaN are missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_floating(column.type):
        column = pc.cast(column, pa.float64())
    values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    missing = np.isnan(values)
    if column.null_count:
        missing |= np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return values, missing


def _texts(column):
    """An Arrow column as trimmed strings (categorical values and labels compare as text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return pc.utf8_trim_whitespace(column)


def _text_missing(texts) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    lowered = pc.utf8_lower(texts)
    hit = pc.is_in(lowered, value_set=pa.array(list(MISSING)))
    return np.asarray(pc.or_kleene(pc.is_null(texts), pc.fill_null(hit, True)).to_numpy(zero_copy_only=False),
                      dtype=bool)


class Where:
    """How errors name a record of a source: `describe(record) -> (path, line or None, words or None)`
    (words, e.g. 'row group 3, row 7 (record 1031)', where no line number is known)."""

    def __init__(self, describe: Callable[[int], tuple[str, int | None, str | None]]):
        self.describe = describe

    def text(self, record: int) -> str:
        path, line, words = self.describe(record)
        return f"{path} " + (f"line {line} (record {record})" if line is not None else words or f"record {record}")

    def error(self, record: int, column: str | None, problem: str, hint: str | None = None) -> DataError:
        path, line, words = self.describe(record)
        if line is None:  # DataError names a record only beside a line: say where it is in words
            return located_error(path, self.text(record), column, problem, hint)
        return DataError(path, problem, line=line, record=record, column=column, hint=hint)


def located_error(path: str, where: str, column: str | None, problem: str, hint: str | None = None) -> DataError:
    """A DataError about `path` whose message names the place in words (`where`, e.g. 'p.parquet row
    group 3, row 33 (record 333)'), the column and the problem."""
    from scaleflow.errors import ScaleflowError

    error = DataError(path, problem, column=column, hint=hint)
    text = where + (f", column {column!r}" if column is not None else "")
    ScaleflowError.__init__(error, f"{text}: {problem}" + (f". {hint}" if hint else ""))
    return error


@dataclass
class ScanResult:
    num_records: int
    encoding: TableEncoding
    num_classes: int
    class_names: tuple
    target_names: tuple
    report: dict


class ColumnScan:
    """One streaming pass over a source's batches: every feature cell and label is checked, and what
    the encoding needs (vocabularies and means over the training split, the label's classes) is
    accumulated in memory bounded by the number of columns and of allowed classes/categories.

    Args:
        path: the source, for errors.
        config: the data config (roles, missing policy, max_categories, max_classes).
        task: the task reading the labels.
        require_label: False: the label is not read (mode=predict).
        encoding: a trained model's encoding to apply unchanged (nothing is fitted then).
    """

    def __init__(self, path: str, header: Sequence[str], config, task, *, require_label: bool = True,
                 encoding: TableEncoding | None = None, label_key: str = "data.label_column"):
        self.path, self.config, self.task, self.label_key = path, config, task, label_key
        self.trained = encoding
        if task.name == "multilabel":
            raise ConfigError("task", "multilabel", "classification, binary or regression for a streamed table",
                              "Multilabel rows are read in memory only: data=csv data.in_memory=true")
        if encoding is None:
            label, features, categorical, ignored = roles(header, path, config, require_label=require_label)
        else:
            absent = [c for c in encoding.columns if c not in header]
            if absent:
                raise DataError(path, f"no column {', '.join(map(repr, absent))}, which the model was trained "
                                f"on (its feature columns: {', '.join(encoding.columns)})",
                                hint="Predict on data with the columns of the training data")
            label = config.label_column if config.label_column in header else None
            if label is None and require_label:
                raise ConfigError(label_key, config.label_column, one_of(header) + f" (columns of {path})",
                                  did_you_mean(config.label_column, header))
            features, categorical = list(encoding.columns), list(encoding.categorical)
            ignored = list(encoding.ignored)
        self.label = label if require_label else None
        self.features, self.categorical, self.ignored = features, categorical, ignored
        self.policy = config.get("missing", "error") if encoding is None else encoding.missing
        self.max_categories = int(config.get("max_categories", 1000))
        self.max_classes = int(config.get("max_classes", 1000))
        self.rows = 0
        self.missing_counts = {c: 0 for c in features}
        self.first_missing: dict[str, int] = {}
        self.sums = {c: 0.0 for c in features if c not in categorical}
        self.present = {c: 0 for c in features if c not in categorical}
        self.values: dict[str, set] = {c: set() for c in categorical}
        self.label_values: set = set()
        self.label_numeric: bool | None = None
        self.unknown: dict[str, int] = {}

    @property
    def columns(self) -> list[str]:
        """The columns a pass reads (ignored ones and the key are never decoded)."""
        return list(self.features) + ([self.label] if self.label else [])

    def needs_training_split(self) -> bool:
        """True when fitting needs to know which records are training records (vocabularies, means)."""
        return self.trained is None and (bool(self.categorical) or self.policy == "mean")

    def add(self, batch, first: int, where: Where, train: np.ndarray | None = None) -> None:
        """Check and accumulate one record batch holding records first..first+len-1; `train` marks its
        training records (None: all of them, or not needed)."""
        n = batch.num_rows
        names = set(batch.schema.names)
        for c in [c for c in self.features if c in names]:  # a pass may read only some columns
            column = batch.column(c)
            if c in self.categorical:
                texts = _texts(column)
                missing = _text_missing(texts)
                if self.trained is None:
                    pick = ~missing if train is None else (~missing & train)
                    if pick.any():
                        import pyarrow as pa
                        import pyarrow.compute as pc

                        distinct = pc.unique(pc.filter(texts, pa.array(pick))).to_pylist()
                        self.values[c].update(distinct)
                        if len(self.values[c]) > self.max_categories:
                            raise ConfigError("data.categorical_columns", c, f"columns with at most data.max_categories="
                                              f"{self.max_categories} distinct values", f"{c!r} has more in the training "
                                              "split: an identifier? List it in data.ignore_columns")
            else:
                if not is_numeric(column.type):
                    raise self._not_a_number(c, column, first, where)
                values, missing = _numbers(column)
                infinite = np.flatnonzero(np.isinf(values))
                if len(infinite):
                    r = int(infinite[0])
                    raise where.error(first + r, c, f"{str(float(values[r]))!r} is not a finite number",
                                      "Infinite values cannot be trained on or imputed: fix or remove the record")
                if self.trained is None and self.policy == "mean":
                    pick = ~missing if train is None else (~missing & train)
                    self.sums[c] += float(values[pick].sum())
                    self.present[c] += int(pick.sum())
            if missing.any():
                if c not in self.first_missing:
                    self.first_missing[c] = first + int(np.flatnonzero(missing)[0])
                self.missing_counts[c] += int(missing.sum())
                if self.policy == "error":
                    raise self._missing_error(c, where)
        if self.label and self.label in names:
            self._add_labels(batch.column(self.label), first, where)
        self.rows += n

    def _not_a_number(self, c: str, column, first: int, where: Where) -> DataError:
        texts = _texts(column).to_pylist()
        for r, v in enumerate(texts):
            if v is None or v.lower() in MISSING:
                continue
            try:
                float(v)
            except ValueError:
                return where.error(first + r, c, f"{v!r} is not a number",
                                   "List it in data.categorical_columns to encode it as categories, or in "
                                   "data.ignore_columns to leave it out")
        return where.error(first, c, f"a column of {column.type}, not numbers",
                           "List it in data.categorical_columns or data.ignore_columns")

    def _missing_error(self, c: str, where: Where) -> DataError:
        more = self.missing_counts[c] - 1
        hint = ("The model was trained with data.missing=error, so it has no value to impute: fill the cell, or "
                "retrain with data.missing=mean or zero" if self.trained is not None else
                "Set data.missing=mean or data.missing=zero to impute, or fix the file")
        return where.error(self.first_missing[c], c, "missing value" + (f" (and {more} more in this batch)"
                                                                        if more else ""), hint)

    def _add_labels(self, column, first: int, where: Where) -> None:
        """Check the labels of a batch (present; finite for regression) and keep their distinct values
        (at most max_classes + 2: beyond that the task names the problem from what is kept)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        numeric = is_numeric(column.type) and not pa.types.is_null(column.type)
        if numeric:
            values, missing = _numbers(column)
        else:
            texts = _texts(column)
            missing = _text_missing(texts)
        if missing.any():
            r = int(np.flatnonzero(missing)[0])
            raise where.error(first + r, self.label, "no label",
                              "Every record needs a label to train or evaluate; remove the record, or use "
                              "mode=predict for unlabelled data")
        if self.task.name == "regression":
            if not numeric:
                try:
                    values, _ = _numbers(pc.cast(texts, pa.float64()))
                except pa.ArrowInvalid:
                    raise self._not_a_number(self.label, column, first, where) from None
            infinite = np.flatnonzero(np.isinf(values))
            if len(infinite):
                r = int(infinite[0])
                raise where.error(first + r, self.label, f"{str(float(values[r]))!r} is not a finite number")
            return
        if len(self.label_values) > self.max_classes + 1:
            return
        if numeric:
            distinct = np.unique(values).tolist()
        else:
            distinct = pc.unique(texts).to_pylist()
            if self.label_numeric is not False:  # text labels that are all numbers are class ids
                from scaleflow.tasks.labels import as_number

                numbers = [as_number(v) for v in distinct]
                if all(v is not None for v in numbers):
                    distinct, numeric = numbers, True
        self.label_numeric = numeric if self.label_numeric is None else (self.label_numeric and numeric)
        self.label_values.update(distinct)

    def result(self, num_records_hint: int | None = None) -> ScanResult:
        """The encoding (fitted unless a trained one was given), the label's classes, the report."""
        config = self.config
        encoding = self.trained
        if encoding is None:
            fill: dict[str, float] = {}
            for c, count in self.missing_counts.items():
                if not count or c in self.categorical:
                    continue
                if self.policy == "mean":
                    if not self.present[c]:
                        raise DataError(self.path, "no value in the training split to compute the mean from "
                                        "(data.missing=mean)", column=c,
                                        hint="Use data.missing=zero or data.ignore_columns")
                    fill[c] = self.sums[c] / self.present[c]
                else:
                    fill[c] = 0.0
            vocabularies = {}
            for c in self.categorical:
                vocab = _vocabulary(np.array(sorted(self.values[c]), dtype=str))
                if not vocab:
                    raise DataError(self.path, "no value in the training split to build categories from", column=c)
                vocabularies[c] = vocab
            encoding = TableEncoding(list(self.features), vocabularies, fill, self.policy, self.label,
                                     list(self.ignored))
        num_classes, class_names, target_names = 0, (), ()
        if self.label and self.task.name == "regression":
            targets = self.task.encode(np.zeros(1), config, key=self.label_key)
            target_names = targets.target_names
        elif self.label:
            distinct = sorted(self.label_values, key=lambda v: (isinstance(v, str), v))
            if self.trained is not None and self.trained.classes:  # a trained model's classes, unchanged
                known = self.trained.classes
                integer = all(isinstance(c, int) for c in known)
                names = set(known) if integer else {str(c) for c in known}
                for v in distinct:
                    key = int(v) if integer and isinstance(v, (int, float)) and float(v) == int(v) else \
                        (v if integer else str(v))
                    if key not in names:
                        raise DataError(self.path, f"label {v!r} is not a class the model was trained on "
                                        f"({', '.join(map(str, known[:20]))})", column=self.label)
                num_classes = len(known)
                class_names = tuple(str(c) for c in known)
            else:
                values = np.array(distinct) if distinct else np.zeros(0, dtype=np.int64)
                labels = values if self.label_numeric else np.array([str(v) for v in distinct], dtype=object)
                targets = self.task.encode(labels, config, key=self.label_key,
                                           where=lambda i: f"a record of {self.path} (label {distinct[i]!r})")
                num_classes, class_names = targets.num_classes, tuple(targets.class_names)
                encoding.classes = list(range(num_classes)) if self.label_numeric else list(class_names)
        imputed = {c: n for c, n in self.missing_counts.items() if n and self.policy != "error"}
        return ScanResult(self.rows if num_records_hint is None else num_records_hint, encoding, num_classes,
                          class_names, target_names, {"imputed": imputed, "unknown_categories": dict(self.unknown)})


# ------------------------------------------------------------------------------------- encoding
class BatchEncoder:
    """Arrow record batch -> (float32 inputs, targets as the task's loss expects), vectorised.

    Args:
        encoding: the fitted (or trained) encoding.
        task: the task reading the labels; `num_classes` from the scan.
        labelled: False: the targets are zeros nobody reads (mode=predict).
    """

    def __init__(self, encoding: TableEncoding, task, config, num_classes: int, *, labelled: bool = True,
                 path: str = "", label_key: str = "data.label_column"):
        import pyarrow as pa

        self.encoding, self.task, self.config = encoding, task, config
        self.num_classes, self.labelled, self.path, self.label_key = num_classes, labelled, path, label_key
        self.width = len(encoding.feature_names)
        self.vocab = {c: pa.array(v, pa.string()) for c, v in encoding.categorical.items()}
        classes = encoding.classes or []
        self.integer_classes = all(isinstance(c, (int, np.integer)) for c in classes)
        self.class_set = pa.array([str(c) for c in classes], pa.string())

    @property
    def columns(self) -> list[str]:
        return list(self.encoding.columns) + ([self.config.label_column] if self.labelled else [])

    def inputs(self, batch, where: Callable[[int], str] = lambda r: f"row {r}") -> np.ndarray:
        import pyarrow.compute as pc

        x = np.zeros((batch.num_rows, self.width), dtype=np.float32)
        offset = 0
        for c in self.encoding.columns:
            column = batch.column(c)
            if c in self.encoding.categorical:
                ids = pc.index_in(_texts(column), value_set=self.vocab[c])
                ids = np.asarray(pc.fill_null(ids, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
                known = np.flatnonzero(ids >= 0)
                x[known, offset + ids[known]] = 1.0
                offset += len(self.encoding.categorical[c])
            else:
                values, missing = _numbers(column)
                if missing.any():
                    if self.encoding.missing == "error" and c not in self.encoding.fill:
                        r = int(np.flatnonzero(missing)[0])
                        raise located_error(self.path, where(r), c, "missing value (NaN or null)",
                                            "Set data.missing=mean or data.missing=zero to impute, or fix the file")
                    values = np.where(missing, self.encoding.fill.get(c, 0.0), values)
                x[:, offset] = values
                offset += 1
        return x

    def targets(self, batch) -> np.ndarray:
        """The task's targets of a batch: class ids (as the scan numbered them) or float targets."""
        n = batch.num_rows
        if not self.labelled:
            return np.zeros(n, dtype=np.int32)
        column = batch.column(self.config.label_column)
        if self.task.name == "regression":
            labels, _ = _numbers(column) if is_numeric(column.type) else _numbers(_as_float(column))
        elif self.integer_classes:
            values, _ = _numbers(column) if is_numeric(column.type) else _numbers(_as_float(column))
            labels = values.astype(np.int64)
        else:
            import pyarrow.compute as pc

            ids = pc.index_in(_texts(column), value_set=self.class_set)
            if ids.null_count:
                r = int(np.flatnonzero(np.asarray(ids.is_null().to_numpy(zero_copy_only=False)))[0])
                raise DataError(self.path, f"label {_texts(column)[r].as_py()!r} is not a known class",
                                column=self.config.label_column)
            labels = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.int64)
        targets = self.task.encode(labels, self.config, key=self.label_key, min_classes=self.num_classes)
        return targets.y

    def __call__(self, batch, where: Callable[[int], str] = lambda r: f"row {r}") -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of one record batch; `where(row)` names a row of it in errors."""
        return self.inputs(batch, where), self.targets(batch)


def _as_float(column):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(_texts(column), pa.float64())


# -------------------------------------------------------------------------------------- reading
def ordered_map(fn: Callable[[Any], Any], items_: Iterable[Any], workers: int = 2, ahead: int = 2) -> Iterator[Any]:
    """fn(item) for each item, in order, computed `ahead` items ahead on `workers` threads: at most
    `ahead + 1` results are held at once (bounded memory), and pyarrow decodes while Python encodes."""
    items_ = iter(items_)
    if workers <= 1 or ahead <= 0:
        yield from map(fn, items_)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: deque = deque(pool.submit(fn, item) for item in itertools.islice(items_, ahead))
        for item in items_:
            pending.append(pool.submit(fn, item))
            yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def keep_rows(mask: np.ndarray, row: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a batch (rows row..row+len(x)-1 of a unit) that `mask` (one bool per row of the unit,
    possibly shorter: the rest is not kept) keeps."""
    m = mask[row:row + len(x)]
    if len(m) < len(x):
        m = np.concatenate([m, np.zeros(len(x) - len(m), dtype=bool)])
    return x[m], y[m]


def tf_records(make_batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], width: int, targets_shape,
               targets_dtype) -> Any:
    """A tf.data.Dataset of single records from a Python iterator of (inputs, targets) batches:
    TensorFlow pulls whole batches from Python (one call per few thousand records) and splits them
    in C++."""
    import tensorflow as tf

    signature = (tf.TensorSpec([None, width], tf.float32),
                 tf.TensorSpec([None, *targets_shape], tf.as_dtype(targets_dtype)))
    ds = tf.data.Dataset.from_generator(make_batches, output_signature=signature)
    return ds.prefetch(2).unbatch()


def targets_spec(task, config, num_classes: int) -> tuple[tuple, Any]:
    """(per-record shape, dtype) of the targets `BatchEncoder.targets` gives."""
    y = task.encode(np.zeros(1, dtype=np.int64), config, min_classes=max(num_classes, 2)).y \
        if task.name != "regression" else task.encode(np.zeros(1), config).y
    return tuple(y.shape[1:]), y.dtype
