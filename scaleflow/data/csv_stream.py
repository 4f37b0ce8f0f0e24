"""A CSV file streamed in blocks of lines (pyarrow's CSV parser), in bounded memory: the reader behind
`data=csv` for files above `data.in_memory_max_mb` (or with `data.in_memory=false`).

The file is cut into blocks of about `BLOCK_BYTES`, each starting just after a newline (found by
seeking to the nominal offset and reading to the next newline, so any process finds the same blocks
without reading the file). A block is parsed on its own by pyarrow (C++, the GIL released), several
at a time on threads, and encoded batch by batch (`columnar.BatchEncoder`): no Python object per
cell, nothing held beyond a few blocks.

Describing parses every block once (one pass; a second only when vocabularies or means need the
training split) to count the records per block, check every cell and fit the encoding exactly as
the in-memory reader does. Reading then opens only the blocks holding a record the pipeline keeps:
with `data.shard=sequential` each of N workers parses about 1/N of the file.

The records, their global ids, the train/validation split and every shard are those of the in-memory
reader (`DataInfo.files` is empty in both: the plan is record level either way), so switching
`data.in_memory` never changes what a pipeline trains on.

Not supported here (use `data.in_memory=true`): a quoted value holding a newline, `data.mask`,
encrypted files, task=multilabel.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from scaleflow.data.base import DataInfo, file_fingerprint
from scaleflow.data.columnar import (BatchEncoder, ColumnScan, Where, keep_rows, missing_texts, ordered_map,
                                     targets_spec, tf_records)
from scaleflow.data.tabular import TableEncoding, data_delimiter, describe_encoding
from scaleflow.errors import ConfigError, DataError, did_you_mean, one_of

log = logging.getLogger("scaleflow")

BLOCK_BYTES = 4 << 20  # bytes of CSV text parsed at once
PARSE_THREADS = 2


@dataclass(frozen=True)
class Layout:
    """Where a CSV file's records are: its header and its blocks (byte ranges of whole lines)."""

    path: str
    header: tuple[str, ...]
    header_line: int  # 1-based line of the header
    starts: tuple[int, ...]  # byte offset of each block
    ends: tuple[int, ...]


def read_header(path: str, delimiter: str) -> tuple[list[str], int, int]:
    """(column names, byte offset just after the header line, header line number)."""
    line_number = 0
    with open(path, "rb") as f:
        while True:
            raw = f.readline()
            line_number += 1
            if not raw:
                raise DataError(path, "the file is empty", hint="A CSV needs a header row, then one record per line")
            try:
                text = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, f"not UTF-8 text (byte {e.start} of line {line_number})") from None
            if text.strip():
                break
        end = f.tell()
    names = [h.strip() for h in next(csv.reader([text], delimiter=delimiter))]
    for i, name in enumerate(names):
        if not name:
            raise DataError(path, f"header field {i + 1} has no name", line=line_number, hint="Every column needs a name")
        if names.index(name) != i:
            raise DataError(path, f"column {name!r} appears twice in the header", line=line_number)
    return names, end, line_number


def layout(path: str, delimiter: str, block_bytes: int | None = None) -> Layout:
    """The header and the blocks: O(file size / block_bytes) small reads, never the whole file."""
    block_bytes = block_bytes or BLOCK_BYTES
    names, start, header_line = read_header(path, delimiter)
    size = os.path.getsize(path)
    starts = [start]
    with open(path, "rb") as f:
        nominal = start + block_bytes
        while nominal < size:
            f.seek(nominal - 1)
            offset = nominal - 1
            while True:  # the first newline at or after nominal - 1: the block starts after it
                chunk = f.read(1 << 16)
                if not chunk:
                    offset = size
                    break
                found = chunk.find(b"\n")
                if found >= 0:
                    offset += found + 1
                    break
                offset += len(chunk)
            if offset >= size:
                break
            if offset > starts[-1]:
                starts.append(offset)
            nominal = max(offset, nominal) + block_bytes
    if start >= size:  # a header without records
        starts = []
    ends = starts[1:] + [size] if starts else []
    return Layout(path, tuple(names), header_line, tuple(starts), tuple(ends))


@dataclass(frozen=True)
class CSVIndex:
    """How a CSV file is indexed (an `index.IndexFormat`): its blocks (byte ranges, records, first
    line) and, per describing config (a digest of the keys that change it), the description: the
    fitted encoding, classes and report. A worker that finds the index describes without parsing
    and then parses only the blocks holding its records.

    Args:
        delimiter: data.delimiter.
        block_bytes: the nominal block size the blocks were cut with.
        digest: the describing config's digest (see `StreamingCSV._digest`).
        describe: builds (layout arrays, description) by one parse of the file, for `build`.
        previous: descriptions of other configs already held by the file's index (kept on rebuild).
    """

    delimiter: str
    block_bytes: int
    digest: str
    describe: Any = field(default=None, compare=False, hash=False)
    previous: tuple = ()
    kind = "csv"
    version = 1

    def build(self, path: str) -> tuple[dict[str, np.ndarray], dict]:
        arrays, description = self.describe()
        descriptions = {**dict(self.previous), self.digest: description}
        return arrays, {"records": int(arrays["counts"].sum()), "delimiter": self.delimiter,
                        "block_bytes": self.block_bytes, "header": list(description.pop("header")),
                        "header_line": description.pop("header_line"), "descriptions": descriptions}

    def satisfies(self, meta: dict) -> str | None:
        if meta.get("delimiter") != self.delimiter or meta.get("block_bytes") != self.block_bytes:
            return f"was built with data.delimiter={meta.get('delimiter')!r}, blocks of {meta.get('block_bytes')}"
        if self.digest not in meta.get("descriptions", {}):
            return "holds no description for this data config (columns, missing, split)"
        return None

    def merged(self, meta: dict) -> "CSVIndex":
        kept = tuple((k, v) for k, v in meta.get("descriptions", {}).items() if k != self.digest)
        return replace(self, previous=kept)

    def check(self, path: str, index) -> str | None:
        meta, arrays = index.meta, index.arrays
        starts, ends, counts = arrays.get("starts"), arrays.get("ends"), arrays.get("counts")
        if starts is None or ends is None or counts is None or not (len(starts) == len(ends) == len(counts)):
            return "no consistent starts/ends/counts"
        if int(counts.sum()) != meta.get("records"):
            return f"{int(counts.sum())} records in its blocks for {meta.get('records')}"
        size = os.path.getsize(path)
        if len(ends) and (int(ends[-1]) != size or np.any(starts[1:] != ends[:-1]) or np.any(ends < starts)):
            return f"its blocks do not cover the file's {size} bytes"
        with open(path, "rb") as f:  # a block starts just after a newline
            for i in sorted({1, len(starts) // 2, len(starts) - 1} & set(range(1, len(starts)))):
                if os.pread(f.fileno(), 1, int(starts[i]) - 1) != b"\n":
                    return f"block {i} does not start after a newline"
        return None


class StreamingCSV:
    """The streamed reader of `data=csv` (see the module docstring); the `CSV` dataset delegates to it.

    Args:
        task: the task reading the labels.
        encoding: a trained model's encoding to apply unchanged, or None to fit one.
        require_label: False: labels are not read (mode=predict).
    """

    _described: dict = {}

    def __init__(self, task, encoding: TableEncoding | None = None, require_label: bool = True,
                 label_key: str = "data.label_column"):
        self.task, self.encoding, self.require_label, self.label_key = task, encoding, require_label, label_key
        self._read_error: DataError | None = None
        self._lines: dict = {}  # (path, block) -> line of its first record
        self._first_record: dict = {}  # block -> global id of its first record (known once counted)
        self._included: list[str] = []

    # ---------------------------------------------------------------------------- parsing
    def _parse(self, config, lay: Layout, block: int, columns: Sequence[str], types: dict, nulls: bool = True):
        """(block `block` as an Arrow table of `columns`, its newlines); a parse error names the file.
        `nulls=False` keeps missing markers as text (record keys hash as the in-memory reader's)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        with open(lay.path, "rb") as f:
            f.seek(lay.starts[block])
            data = f.read(lay.ends[block] - lay.starts[block])
        read = pacsv.ReadOptions(column_names=list(lay.header), use_threads=False,
                                 block_size=max(1 << 20, len(data) + 1))
        parse = pacsv.ParseOptions(delimiter=config.delimiter, newlines_in_values=False)
        convert = pacsv.ConvertOptions(column_types=types, null_values=missing_texts() if nulls else [],
                                       strings_can_be_null=nulls, quoted_strings_can_be_null=nulls,
                                       include_columns=list(columns))
        try:
            return pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                                  convert_options=convert), data.count(b"\n")
        except pa.ArrowInvalid as e:
            raise self._parse_error(config, lay, block, data, str(e)) from None
        except UnicodeDecodeError as e:
            raise DataError(lay.path, f"not UTF-8 text (byte {lay.starts[block] + e.start} of the file)") from None

    def _parse_error(self, config, lay: Layout, block: int, data: bytes, message: str) -> DataError:
        text = message.splitlines()[0]
        if "Expected" in text and "columns" in text:
            import re

            got = re.search(r"got (\d+)", text)
            row = re.search(r"Row #(\d+)", text)  # 1-based line within the block
            line = self._first_line(config, lay, block) + int(row.group(1)) - 1 if row else None
            return DataError(lay.path, f"{got.group(1) if got else 'a different number of'} field(s) where the "
                             f"header has {len(lay.header)} columns", line=line,
                             hint=f"Every line needs one field per column ({data_delimiter(config.delimiter)}); "
                                  "quote values that contain the delimiter (a quoted value holding a newline "
                                  "needs data.in_memory=true)")
        if "conversion error" in text:
            column = None
            import re

            found = re.search(r"column #(\d+)", text)
            if found:
                column = self._included[int(found.group(1))] if int(found.group(1)) < len(self._included) else None
            value = text.rsplit("invalid value", 1)[-1].strip(" '")
            line = record = None
            if column is not None:  # find the cell: the block's column as text, first non-number
                import pyarrow as pa
                import pyarrow.csv as pacsv

                cells = pacsv.read_csv(pa.BufferReader(data), read_options=pacsv.ReadOptions(column_names=list(lay.header)),
                                       parse_options=pacsv.ParseOptions(delimiter=config.delimiter),
                                       convert_options=pacsv.ConvertOptions(column_types={column: pa.string()},
                                                                            include_columns=[column])).column(0)
                for r, cell in enumerate(cells.to_pylist()):
                    if cell is not None and cell.strip() == value:
                        line = self._first_line(config, lay, block) + r
                        record = self._first_record.get(block, 0) + r if block in self._first_record else None
                        break
            return DataError(lay.path, f"{value!r} is not a number", line=line, record=record, column=column,
                             hint="List it in data.categorical_columns to encode it as categories, or in "
                                  "data.ignore_columns to leave it out")
        return DataError(lay.path, f"unreadable CSV ({text})")

    def _first_line(self, config, lay: Layout, block: int) -> int:
        lines = self._lines.get((lay.path, block))
        return lines if lines is not None else lay.header_line + 1

    def _types(self, scan_or_encoder_columns: Sequence[str], numeric: Sequence[str], label: str | None) -> dict:
        import pyarrow as pa

        types = {c: (pa.float64() if c in numeric else pa.string()) for c in scan_or_encoder_columns}
        if label:
            types[label] = pa.float64() if self.task.name == "regression" else pa.string()
        self._included = list(scan_or_encoder_columns)
        return types

    # ---------------------------------------------------------------------------- describing
    def describe(self, config) -> DataInfo:
        path = config.path
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, repr(sorted((k, repr(v)) for k, v in dict(config).items())),
               self.task.name, repr(self.encoding.to_dict() if self.encoding else None), self.require_label)
        if key not in StreamingCSV._described:
            StreamingCSV._described.clear()
            StreamingCSV._described[key] = self._indexed(config) or self._describe(config)
        info, self._layout, self._counts, self._lines = StreamingCSV._described[key]
        return info

    def _digest(self, config) -> str:
        """What changes a description of the same file: column roles, missing policy, the split, the task."""
        import hashlib
        import json

        keys = ("label_column", "feature_columns", "ignore_columns", "categorical_columns", "missing",
                "max_categories", "max_classes", "class_names", "validation_split", "seed", "shard_key", "delimiter")
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config)
        text = json.dumps({**{k: plain.get(k) for k in keys}, "task": self.task.name}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def index_format(self, config) -> tuple["CSVIndex", dict]:
        """(the file's index format for this config, a dict that receives the scan's own result
        under "result" when this process builds the index)."""
        built: dict = {}

        def describe():
            info, lay, counts, lines = self._describe(config)
            built["result"] = (info, lay, counts, lines)
            firsts = [lines.get((lay.path, b), lay.header_line + 1) for b in range(len(lay.starts))]
            arrays = {"starts": np.asarray(lay.starts, np.int64), "ends": np.asarray(lay.ends, np.int64),
                      "counts": np.asarray(counts, np.int64), "lines": np.asarray(firsts, np.int64)}
            description = {"header": list(lay.header), "header_line": lay.header_line,
                           "num_classes": info.num_classes, "class_names": list(info.class_names),
                           "target_names": list(info.target_names), "extra": info.extra}
            return arrays, description

        return CSVIndex(config.delimiter, BLOCK_BYTES, self._digest(config), describe), built

    def _indexed(self, config):
        """The description from the file's index (built once by the first describe, under the index
        engineer's cache: location, staleness, locking), or None when it cannot be used: data.index=off,
        a trained model's encoding or unlabelled data (mode=evaluate|predict describe by scan)."""
        from scaleflow.data.index import IndexOptions, log_summary, open_indexes, summary

        options = IndexOptions.from_config(config)
        if not options.enabled or self.encoding is not None or not self.require_label:
            self._index_report = {"used": False, "why": "data.index=off" if not options.enabled else
                                  "describing for a trained model (evaluate/predict) scans"}
            return None
        import time

        started = time.perf_counter()
        fmt, built = self.index_format(config)
        [ix] = open_indexes([config.path], fmt, options)
        report = summary([ix], options, time.perf_counter() - started)
        log_summary(report)
        self._index_report = report
        if "result" in built:  # this process built it: the scan's own result
            info, lay, counts, lines = built["result"]
            info.extra["index"] = report
            return info, lay, counts, lines
        meta, arrays = ix.meta, ix.arrays
        description = meta["descriptions"][fmt.digest]
        lay = Layout(config.path, tuple(meta["header"]), int(meta["header_line"]),
                     tuple(arrays["starts"].tolist()), tuple(arrays["ends"].tolist()))
        counts = tuple(arrays["counts"].tolist())
        lines = {(lay.path, b): int(v) for b, v in enumerate(arrays["lines"].tolist())}
        extra = {**description["extra"], "index": report}
        info = DataInfo(num_examples=int(sum(counts)), input_shape=(len(extra["feature_names"]),),
                        num_classes=int(description["num_classes"]), fingerprint=file_fingerprint([config.path]),
                        extra=extra, class_names=tuple(description["class_names"]),
                        target_names=tuple(description["target_names"]))
        return info, lay, counts, lines

    def _describe(self, config):
        lay = layout(config.path, config.delimiter)
        scan = ColumnScan(config.path, lay.header, config, self.task, require_label=self.require_label,
                          encoding=self.encoding, label_key=self.label_key)
        numeric = [c for c in scan.features if c not in scan.categorical]
        types = self._types(scan.columns, numeric, scan.label)
        self._lines = {}
        blocks = range(len(lay.starts))

        def parse(block):
            return self._parse(config, lay, block, scan.columns, types)

        counts, lines = [], []
        first_line = lay.header_line + 1
        train_mask = None
        if scan.needs_training_split():  # which records are training ones needs the count first
            for table, newlines in ordered_map(parse, blocks, workers=PARSE_THREADS, ahead=PARSE_THREADS):
                counts.append(table.num_rows)
                lines.append(newlines)
            from scaleflow.data.sharding import split_indices

            total = int(sum(counts))
            if total:
                train, _ = split_indices(total, config.validation_split, config.seed)
                train_mask = np.zeros(total, dtype=bool)
                train_mask[train] = True
            counts, lines = [], []
        block_lines = {}
        firsts: list[tuple[int, int, bool]] = []  # per block: first record, its line, lines == records

        def where_of(record: int) -> tuple[str, int | None, None]:
            b = max(0, int(np.searchsorted([f[0] for f in firsts], record, side="right")) - 1)
            first_record, line, exact = firsts[b] if firsts else (0, 0, False)
            return config.path, (line + record - first_record) if exact else None, None

        where = Where(where_of)
        first = 0
        for block, (table, newlines) in zip(blocks, ordered_map(parse, blocks, workers=PARSE_THREADS,
                                                                ahead=PARSE_THREADS)):
            block_lines[(lay.path, block)] = first_line
            last_block = block == len(lay.starts) - 1
            firsts.append((first, first_line, newlines == table.num_rows or (last_block and newlines == table.num_rows - 1)))
            for batch in table.to_batches(max_chunksize=65536):
                scan.add(batch, first, where, None if train_mask is None else train_mask[first:first + batch.num_rows])
                first += batch.num_rows
            counts.append(table.num_rows)
            first_line += newlines
        if not first:
            raise DataError(config.path, "the header has no records under it", line=lay.header_line,
                            hint="The file holds column names only; add data rows")
        result = scan.result()
        encoding = result.encoding
        extra = {"encoding": encoding.to_dict(), "report": describe_encoding(encoding, result.report),
                 "feature_names": encoding.feature_names, "labelled": scan.label is not None,
                 "class_names": [str(c) for c in encoding.classes] if encoding.classes else None,
                 "reader": {"name": "csv", "mode": "streaming", "blocks": len(lay.starts),
                            "block_bytes": BLOCK_BYTES, "bytes": os.path.getsize(config.path)}}
        info = DataInfo(num_examples=first, input_shape=(len(encoding.feature_names),),
                        num_classes=result.num_classes, fingerprint=file_fingerprint([config.path]), extra=extra,
                        class_names=result.class_names, target_names=result.target_names)
        return info, lay, tuple(counts), block_lines

    # ------------------------------------------------------------------------------- reading
    def read(self, config, files=None) -> Any:
        return self._stream(config, None)

    def take(self, config, indices: np.ndarray) -> Any:
        indices = np.asarray(indices, dtype=np.int64)
        keep = np.zeros(int(indices.max()) + 1 if len(indices) else 0, dtype=bool)
        keep[indices] = True
        return self._stream(config, keep)

    def _stream(self, config, keep: np.ndarray | None) -> Any:
        info = self.describe(config)
        lay, counts = self._layout, self._counts
        encoding = TableEncoding.from_dict(info.extra["encoding"])
        labelled = self.require_label and info.extra.get("labelled", True)
        encoder = BatchEncoder(encoding, self.task, config, info.num_classes, labelled=labelled, path=config.path,
                               label_key=self.label_key)
        numeric = [c for c in encoding.columns if c not in encoding.categorical]
        types = self._types(encoder.columns, numeric, config.label_column if labelled else None)
        shape, dtype = targets_spec(self.task, config, info.num_classes)
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        blocks = []  # only the blocks holding a kept record are parsed
        for b in range(len(counts)):
            if keep is None:
                blocks.append((b, None))
                continue
            if offsets[b] >= len(keep):
                break
            mask = keep[offsets[b]:offsets[b + 1]]
            if mask.any():
                blocks.append((b, mask))
        if keep is not None:  # what this pipeline parses (run.json's amplification counts the whole file)
            log.info("%s: parsing %d of %d blocks for %d record(s)", config.path, len(blocks), len(counts),
                     int(keep.sum()))
        dataset = self

        def load(item):
            block, mask = item
            try:
                table, _ = dataset._parse(config, lay, block, encoder.columns, types)
                out = []
                row = 0
                for batch in table.to_batches(max_chunksize=8192):
                    start = int(offsets[block]) + row
                    x, y = encoder(batch, lambda r, s=start: f"{config.path} record {s + r}")
                    if mask is not None:
                        x, y = keep_rows(mask, row, x, y)
                    row += batch.num_rows
                    if len(x):
                        out.append((x, y))
                return out
            except DataError as e:
                dataset._read_error = e
                raise

        def batches():
            for loaded in ordered_map(load, blocks, workers=PARSE_THREADS, ahead=PARSE_THREADS):
                yield from loaded

        return tf_records(batches, encoder.width, shape, dtype)

    def explain_read_error(self, config, error: BaseException, files=None):
        return self._read_error

    def keys(self, config, key: str) -> np.ndarray:
        self.describe(config)
        lay = self._layout
        if key not in lay.header:
            raise ConfigError("data.shard_key", key, one_of(lay.header) + f" (columns of {config.path})",
                              did_you_mean(key, lay.header))
        import pyarrow as pa

        parts = []
        for b in range(len(lay.starts)):
            table, _ = self._parse(config, lay, b, [key], {key: pa.string()}, nulls=False)
            parts.append(np.asarray([("" if v is None else v.strip()) for v in table.column(key).to_pylist()],
                                    dtype=object))
        return np.concatenate(parts).astype(str) if parts else np.zeros(0, dtype=str)
