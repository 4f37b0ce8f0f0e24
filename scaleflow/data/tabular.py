"""CSV tables as model inputs: reading, column roles, categories and missing values, in NumPy only.

Everything here runs before TensorFlow starts (config validation calls `describe`), so a problem in the
file stops the run before it begins, named by file, line (and record) and column, with exit status 2.

Column roles (data=csv):
  label        `data.label_column` (may be absent only where no label is needed: mode=predict)
  ignored      `data.ignore_columns`, and `data.shard_key`: a record's key is never a feature
  categorical  `data.categorical_columns`: one input per category (one-hot), the vocabulary built from
               the training split only; a value outside it (validation or new data) encodes as zeros
  numeric      every other feature column (`data.feature_columns`, default: all the remaining columns)

Missing cells (empty, NA, N/A, NaN, null, None; any case) follow `data.missing`:
  error (default) a data error naming the cell; `mean` the column's mean over the training split;
  `zero` 0. A missing categorical cell encodes as zeros under mean|zero. A missing label and an
  infinite number are always errors.

The fitted `TableEncoding` is recorded in run.json (`data.encoding`) and in the export's metadata, and
applied unchanged when the model later evaluates or predicts other data.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from scaleflow.errors import ConfigError, DataError, did_you_mean, one_of
from scaleflow.security.crypto import open_input

MISSING = ("", "na", "n/a", "nan", "null", "none")


@dataclass(frozen=True)
class Table:
    """A CSV file's cells as stripped strings, one row per record, with the file line of each."""

    path: str
    header: list[str]
    cells: np.ndarray  # (records, columns) of str
    lines: np.ndarray  # file line number (1-based) of each record

    @property
    def num_records(self) -> int:
        return len(self.cells)

    def column(self, name: str) -> np.ndarray:
        return self.cells[:, self.header.index(name)]

    def error(self, record: int, column: str | None, problem: str, hint: str | None = None) -> DataError:
        return DataError(self.path, problem, line=int(self.lines[record]), record=int(record), column=column,
                         hint=hint)


_tables: dict[tuple, Table] = {}


def read_table(path: str, delimiter: str = ",", mask: Any = None) -> Table:
    """Read and check the shape of a CSV file: a header, then one record per line with as many fields.
    `mask` (data/mask.py) is applied right after parsing: nothing downstream sees a raw masked
    value. The last table read is kept (validation, describe and read all ask for it)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError("data.path", path, "an existing CSV file", e.strerror) from None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, delimiter, mask.token() if mask else None)
    if key not in _tables:
        table = _read(path, delimiter)
        if mask is not None:
            header, cells = mask.apply(path, table.header, table.cells)
            table = Table(table.path, header, cells, table.lines)
        _tables.clear()
        _tables[key] = table
    return _tables[key]


def _read(path: str, delimiter: str) -> Table:
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with io.TextIOWrapper(open_input(path), newline="", encoding="utf-8-sig") as f:  # decrypted in memory
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            while header is not None and not any(h.strip() for h in header):  # leading blank lines
                header = next(reader, None)
            if header is None:
                raise DataError(path, "the file is empty", hint="A CSV needs a header row, then one record per line")
            names = [h.strip() for h in header]
            header_line = reader.line_num
            for i, name in enumerate(names):
                if not name:
                    raise DataError(path, f"header field {i + 1} has no name", line=header_line,
                                    hint="Every column needs a name")
                if names.index(name) != i:
                    raise DataError(path, f"column {name!r} appears twice in the header", line=header_line)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line is not a record
                if len(row) != len(names):
                    raise DataError(path, f"{len(row)} field(s) where the header has {len(names)} columns",
                                    line=reader.line_num, record=len(rows),
                                    hint=f"Every line needs one field per column ({data_delimiter(delimiter)}); "
                                         "quote values that contain the delimiter")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text (byte {e.start} of the file)") from None
    except csv.Error as e:
        raise DataError(path, f"unreadable CSV ({e})", line=reader.line_num) from None
    if not rows:
        raise DataError(path, "the header has no records under it", line=header_line,
                        hint="The file holds column names only; add data rows")
    cells = np.char.strip(np.array(rows, dtype=str).reshape(len(rows), len(names)))
    return Table(path, names, cells, np.asarray(lines, dtype=np.int64))


def data_delimiter(delimiter: str) -> str:
    return f"data.delimiter={delimiter!r}"


def missing_mask(values: np.ndarray) -> np.ndarray:
    return np.isin(np.char.lower(values), MISSING)


# --------------------------------------------------------------------------------------- encoding
@dataclass
class TableEncoding:
    """How a table's columns become the model's input vector; fitted on the training split.

    Args:
        columns: the raw feature columns, in input order.
        categorical: column -> vocabulary; each category is one input (one-hot).
        fill: numeric column -> the value a missing cell gets (data.missing=mean|zero).
        missing: the data.missing policy (error | mean | zero).
        label: the label column the model was trained on (None: not known).
        ignored: columns left out (data.ignore_columns and the shard key).
        classes: the label values in class-id order (integer labels keep their value as id).

    Example:
        >>> enc = TableEncoding(["x", "color"], {"color": ["blue", "red"]}, {}, "error")
        >>> enc.feature_names
        ['x', 'color=blue', 'color=red']
    """

    columns: list[str]
    categorical: dict[str, list[str]]
    fill: dict[str, float]
    missing: str
    label: str | None = None
    ignored: list[str] = field(default_factory=list)
    classes: list | None = None

    @property
    def feature_names(self) -> list[str]:
        """One name per model input: the column, or `column=category` for each category."""
        out: list[str] = []
        for c in self.columns:
            out += [f"{c}={v}" for v in self.categorical[c]] if c in self.categorical else [c]
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "feature_names": self.feature_names}

    @classmethod
    def from_dict(cls, d: dict) -> "TableEncoding":
        return cls(list(d["columns"]), {k: list(v) for k, v in d.get("categorical", {}).items()},
                   {k: float(v) for k, v in d.get("fill", {}).items()}, d.get("missing", "error"),
                   d.get("label"), list(d.get("ignored", [])), d.get("classes"))

    def check_columns(self, table: Table, source: str = "the training data") -> None:
        """The table must hold every feature column the model was trained on (extra columns are unused)."""
        absent = [c for c in self.columns if c not in table.header]
        if absent:
            raise DataError(table.path, f"no column {', '.join(map(repr, absent))}, which the model was trained "
                            f"on (its feature columns: {', '.join(self.columns)})",
                            hint=f"Predict on data with the columns of {source}")

    def encode(self, table: Table, trained: bool = False, parsed: dict | None = None) -> tuple[np.ndarray, dict]:
        """(inputs float32 (records, len(feature_names)), report {imputed, unknown categories}).
        `trained`: the encoding is a trained model's (its missing policy cannot change now).
        `parsed`: numeric columns fitting already parsed (column -> (numbers, missing))."""
        self.check_columns(table)
        width = len(self.feature_names)
        x = np.zeros((table.num_records, width), dtype=np.float32)
        imputed: dict[str, int] = {}
        unknown: dict[str, int] = {}
        offset = 0
        for c in self.columns:
            values = table.column(c)
            if c in self.categorical:
                missing = missing_mask(values)
            else:
                numbers, missing = (parsed or {}).get(c) or numeric_column(table, c, values)
                numbers = numbers.copy()
            if missing.any():
                if self.missing == "error":
                    raise _missing_error(table, c, values, missing, trained)
                imputed[c] = int(missing.sum())
            if c in self.categorical:
                vocab = self.categorical[c]
                index = {v: i for i, v in enumerate(vocab)}
                ids = np.array([index.get(v, -1) for v in values.tolist()], dtype=np.int64)
                known = ids >= 0
                unseen = int((~known & ~missing).sum())
                if unseen:
                    unknown[c] = unseen
                x[np.flatnonzero(known), offset + ids[known]] = 1.0
                offset += len(vocab)
            else:
                numbers[missing] = self.fill.get(c, 0.0)
                with np.errstate(over="ignore"):
                    x[:, offset] = numbers
                overflow = np.flatnonzero(~np.isfinite(x[:, offset]))
                if len(overflow):
                    r = int(overflow[0])
                    raise table.error(r, c, f"{str(values[r])!r} does not fit in float32")
                offset += 1
        return x, {"imputed": imputed, "unknown_categories": unknown}


def _missing_error(table: Table, column: str, values: np.ndarray, missing: np.ndarray,
                   trained: bool = False) -> DataError:
    r = int(np.flatnonzero(missing)[0])
    what = "empty cell" if not values[r] else f"missing value {str(values[r])!r}"
    more = int(missing.sum()) - 1
    hint = ("The model was trained with data.missing=error, so it has no value to impute: fill the cell, or "
            "retrain with data.missing=mean or zero" if trained else
            "Set data.missing=mean or data.missing=zero to impute, or fix the file")
    return table.error(r, column, what + (f" (and {more} more in this column)" if more else ""), hint)


def numeric_column(table: Table, column: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, missing mask) of a numeric column. A clean column converts in one NumPy call
    ('nan' parses as NaN: a missing marker); only a column that does not is checked cell by cell."""
    try:
        numbers = values.astype(np.float64)
    except ValueError:
        missing = missing_mask(values)
        return parse_numbers(table, column, values, missing), missing
    missing = np.isnan(numbers)
    infinite = np.flatnonzero(np.isinf(numbers))
    if len(infinite):
        r = int(infinite[0])
        raise table.error(r, column, f"{str(values[r])!r} is not a finite number",
                          "Infinite values cannot be trained on or imputed: fix or remove the record")
    return numbers, missing


def parse_numbers(table: Table, column: str, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """float64 values of a numeric column (NaN where missing); a non-number or infinity is named."""
    out = np.full(len(values), np.nan)
    present = np.flatnonzero(~missing)
    try:
        out[present] = values[present].astype(np.float64)
    except ValueError:
        for r in present.tolist():
            try:
                float(values[r])
            except ValueError:
                distinct = len(np.unique(values))
                hint = (f"It looks like an identifier ({distinct} distinct values in {len(values)} records): list it "
                        "in data.ignore_columns or name it data.shard_key" if distinct > 0.5 * len(values) >= 10 else
                        "List it in data.categorical_columns to encode it as categories, or in "
                        "data.ignore_columns to leave it out")
                raise table.error(r, column, f"{str(values[r])!r} is not a number", hint) from None
    infinite = np.flatnonzero(np.isinf(out))
    if len(infinite):
        r = int(infinite[0])
        raise table.error(r, column, f"{str(values[r])!r} is not a finite number",
                          "Infinite values cannot be trained on or imputed: fix or remove the record")
    return out


def _names(table: Table, key: str, names: Sequence[str] | None) -> list[str]:
    out = [str(n) for n in (names or [])]
    for n in out:
        if n not in table.header:
            raise ConfigError(key, n, one_of(table.header) + f" (columns of {table.path})", did_you_mean(n, table.header))
    return out


def column_roles(table: Table, config, *, require_label: bool = True) -> tuple[str | None, list[str], list[str], list[str]]:
    """(label or None, feature columns, categorical columns, ignored columns) from the config; every
    name must be a column, and no column may have two roles."""
    label = config.label_column
    if label not in table.header:
        if require_label:
            raise ConfigError("data.label_column", label, one_of(table.header) + f" (columns of {table.path})",
                              did_you_mean(label, table.header))
        label = None
    ignored = _names(table, "data.ignore_columns", config.get("ignore_columns"))
    categorical = _names(table, "data.categorical_columns", config.get("categorical_columns"))
    explicit = _names(table, "data.feature_columns", config.feature_columns)
    key = config.get("shard_key")
    for name in categorical + explicit:
        if name == label:
            k = "data.categorical_columns" if name in categorical else "data.feature_columns"
            raise ConfigError(k, name, "feature columns other than the label", f"{name!r} is data.label_column")
        if name == key:
            k = "data.categorical_columns" if name in categorical else "data.feature_columns"
            raise ConfigError(k, name, "feature columns other than data.shard_key",
                              f"{name!r} is the record key (data.shard_key), which is never a feature")
        if name in ignored:
            k = "data.categorical_columns" if name in categorical else "data.feature_columns"
            raise ConfigError(k, name, "columns not listed in data.ignore_columns", f"{name!r} is ignored")
    left_out = set(ignored) | {label, key}
    features = explicit or [c for c in table.header if c not in left_out]
    if explicit:
        features += [c for c in categorical if c not in explicit]  # a categorical column is a feature
    if not features:
        raise ConfigError("data.feature_columns", config.feature_columns,
                          "at least one feature column", f"{table.path} has no column left after the label, "
                          "data.ignore_columns and data.shard_key")
    ignored_all = ignored + ([key] if key in table.header and key not in ignored and key != label else [])
    return label, features, [c for c in features if c in categorical], ignored_all


def fit_encoding(table: Table, config, train_records: np.ndarray, *, require_label: bool = True,
                 parsed: dict | None = None) -> TableEncoding:
    """The encoding of `table` under `config`, with vocabularies and means from `train_records` only.
    Every cell of every feature column is checked (not only the training records). `parsed`, when
    given, receives the parsed numeric columns for `TableEncoding.encode`."""
    label, features, categorical, ignored = column_roles(table, config, require_label=require_label)
    policy = config.get("missing", "error")
    max_categories = int(config.get("max_categories", 1000))
    vocabularies: dict[str, list[str]] = {}
    fill: dict[str, float] = {}
    for c in features:
        values = table.column(c)
        if c in categorical:
            missing = missing_mask(values)
        else:
            numbers, missing = numeric_column(table, c, values)
            if parsed is not None:
                parsed[c] = (numbers, missing)
        if missing.any() and policy == "error":
            raise _missing_error(table, c, values, missing)
        train_values, train_missing = values[train_records], missing[train_records]
        if c in categorical:
            vocab = _vocabulary(train_values[~train_missing])
            if not vocab:
                raise DataError(table.path, "no value in the training split to build categories from", column=c)
            if len(vocab) > max_categories:
                raise ConfigError("data.categorical_columns", c, f"columns with at most data.max_categories="
                                  f"{max_categories} distinct values", f"{c!r} has {len(vocab)} in the training "
                                  "split: an identifier? List it in data.ignore_columns")
            vocabularies[c] = vocab
            continue
        if policy == "mean" and missing.any():
            present = numbers[train_records][~train_missing]
            if not len(present):
                raise DataError(table.path, "no value in the training split to compute the mean from "
                                "(data.missing=mean)", column=c, hint="Use data.missing=zero or data.ignore_columns")
            fill[c] = float(present.mean())
        elif missing.any():
            fill[c] = 0.0
    return TableEncoding(features, vocabularies, fill, policy, label, ignored)


def _vocabulary(values: np.ndarray) -> list[str]:
    """Sorted distinct values: numerically when every value is a number (so '2' < '10')."""
    distinct = np.unique(values).tolist()
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def labels_present(table: Table, label: str) -> np.ndarray:
    """The label column; a missing label is a data error naming the record."""
    values = table.column(label)
    missing = missing_mask(values)
    if missing.any():
        r = int(np.flatnonzero(missing)[0])
        raise table.error(r, label, "no label" if not values[r] else f"missing label {str(values[r])!r}",
                          "Every record needs a label to train or evaluate; remove the record, or use "
                          "mode=predict for unlabelled data")
    return values


def class_ids(table: Table, label: str, values: np.ndarray, classes: list) -> np.ndarray:
    """Class ids of `values` under a trained model's class list; a label it never saw is named."""
    integer = all(isinstance(c, int) for c in classes)
    index = {c: c for c in classes} if integer else {str(c): i for i, c in enumerate(classes)}
    out = np.empty(len(values), dtype=np.int32)
    for r, v in enumerate(values.tolist()):
        key: Any = v
        if integer:
            try:
                number = float(v)
                key = int(number) if number == int(number) else v
            except (ValueError, OverflowError):
                key = v
        if key not in index:
            shown = ", ".join(map(str, classes[:20])) + (", ..." if len(classes) > 20 else "")
            raise table.error(r, label, f"label {v!r} is not a class the model was trained on ({shown})")
        out[r] = index[key]
    return out


def describe_encoding(encoding: TableEncoding, report: dict) -> dict[str, Any]:
    """run.json's `data.encoding`: the whole encoding (a run dir can predict with it) and what was
    imputed or unknown."""
    return {**encoding.to_dict(), **report}
