"""The index of a TFRecord file: where each record is, and the values sharding and describing need.

Arrays: `offsets` (byte offset of each record's header; in the *uncompressed* stream when
data.compression is GZIP or ZLIB) and `lengths` (payload bytes), plus, per indexed feature (the
label, the shard key), the first value of that feature in every record. Meta: the record count, the
compression, the indexed features with their value kind, and the label histogram.

Built in pure Python/NumPy (no TensorFlow): the framing is walked over a memory map, the record
header checksums are checked all at once in NumPy, and only the wanted features of each payload are
decoded. Used by `TFRecord.describe`/`keys` (O(files) once indexed) and by the seek reader
(`byte_ranges`: only the records a pipeline keeps are read). A compressed file cannot be read from
an offset (the offsets count uncompressed bytes), so it is described from its index but read by scan.
"""

from __future__ import annotations

import mmap
import os
import struct
from array import array
from dataclasses import dataclass, replace

import numpy as np

from scaleflow.data.tfrecord_format import _CRC_TABLE, RecordError, _records, _varint

_TABLE = np.array(_CRC_TABLE, dtype=np.uint32)
HEADER = 12  # uint64 length + uint32 masked crc32c of the length
FRAME = 16  # header + uint32 masked crc32c of the payload
# Kinds of an indexed feature's values: one per feature, "mixed" when records disagree (then the
# values are not kept and a describe that needs them scans the file, as without an index).
KINDS = ("int", "float", "bytes", "mixed")
MAX_HISTOGRAM = 10_000  # distinct label values kept in the histogram (more: a regression target)
BLOCK = 1 << 16  # records whose features are read at once when indexing


def masked_crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC-32C of each row of a uint8 matrix, vectorized over rows."""
    crc = np.full(len(rows), 0xFFFFFFFF, dtype=np.uint32)
    for column in range(rows.shape[1]):
        crc = _TABLE[(crc ^ rows[:, column]) & 0xFF] ^ (crc >> np.uint32(8))
    crc = (crc ^ np.uint32(0xFFFFFFFF)).astype(np.uint64)
    return ((((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(0xA282EAD8)) & np.uint64(0xFFFFFFFF)) \
        .astype(np.uint32)


def _bad_header(buffer, offsets: np.ndarray) -> int | None:
    """Position (in `offsets`) of the first record whose length checksum is wrong, or None."""
    if not len(offsets):
        return None
    view = np.frombuffer(buffer, dtype=np.uint8)
    rows = view[offsets[:, None] + np.arange(HEADER)]
    stored = rows[:, 8:12].copy().view("<u4").reshape(-1)
    bad = np.flatnonzero(masked_crc32c_rows(rows[:, :8]) != stored)
    return int(bad[0]) if len(bad) else None


_HEADER_HINT = "; is this a TFRecord file (or a compressed one: data.compression=GZIP|ZLIB)?"


def frame(path: str, buffer, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, payload lengths) of every record of an uncompressed TFRecord file held in `buffer`
    (e.g. a memory map); RecordError names a corrupt header or a truncated file like the scanner."""
    unpack = struct.Struct("<Q").unpack_from
    offsets, lengths = array("q"), array("q")  # 8 bytes per record, not a Python int object
    offset = 0
    problem = None
    while offset < size:
        if offset + HEADER > size:
            problem = ("truncated: the file ends inside a record header "
                       f"({size - offset} of 12 bytes)")
            break
        (length,) = unpack(buffer, offset)
        end = offset + FRAME + length
        offsets.append(offset)
        lengths.append(length)
        if end > size:
            problem = (f"truncated: the record needs {FRAME + length} bytes from byte {offset}, "
                       f"the file has {size - offset} left")
            break
        offset = end
    offsets_a, lengths_a = np.frombuffer(offsets, dtype=np.int64).copy(), np.frombuffer(lengths, dtype=np.int64).copy()
    bad = _bad_header(buffer, offsets_a)  # the first bad header explains any later "truncation"
    if bad is not None:
        raise RecordError(path, bad, int(offsets_a[bad]), "corrupt record header (length checksum mismatch)"
                          + _HEADER_HINT)
    if problem is not None:
        record = len(offsets) - (1 if problem.startswith("truncated: the record") else 0)
        raise RecordError(path, record, offset, problem)
    return offsets_a, lengths_a


# --------------------------------------------------------------------------- feature values
def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 2:
        length, pos = _varint(buf, pos)
        return pos + length
    if wire == 5:
        return pos + 4
    if wire == 1:
        return pos + 8
    raise ValueError(f"unsupported protobuf wire type {wire}")


def _first_of_feature(buf: bytes, pos: int, end: int):
    """The first value of a serialized tf.train.Feature in buf[pos:end] (None when empty)."""
    while pos < end:
        tag, pos = _varint(buf, pos)
        kind, wire = tag >> 3, tag & 7
        if wire != 2:
            pos = _skip(buf, pos, wire)
            continue
        length, pos = _varint(buf, pos)
        list_end = pos + length
        while pos < list_end:  # bytes_list=1, float_list=2, int64_list=3: field 1 holds the values
            vtag, pos = _varint(buf, pos)
            vnum, vwire = vtag >> 3, vtag & 7
            if vnum != 1:
                pos = _skip(buf, pos, vwire)
                continue
            if kind == 1:
                n, pos = _varint(buf, pos)
                return buf[pos:pos + n]
            if kind == 2:
                if vwire == 2:
                    n, pos = _varint(buf, pos)
                    return struct.unpack_from("<f", buf, pos)[0] if n >= 4 else None
                return struct.unpack_from("<f", buf, pos)[0]
            if kind == 3:
                if vwire == 2:
                    n, pos = _varint(buf, pos)
                    if not n:
                        return None
                value, _ = _varint(buf, pos)
                return value - (1 << 64) if value >= 1 << 63 else value
            pos = _skip(buf, pos, vwire)
        return None
    return None


def first_values(example: bytes, wanted: dict) -> list:
    """For each name in `wanted` (name bytes -> slot), the first value of that feature in a serialized
    tf.train.Example (int, float or bytes; None when absent), as `tfrecord_format.feature_value`
    reads one feature, but every wanted feature in one pass."""
    out = [None] * len(wanted)
    seen = [False] * len(wanted)
    n, pos = len(example), 0
    while pos < n:
        tag, pos = _varint(example, pos)
        if tag != 0x0A:  # Example.features = 1 (a message)
            pos = _skip(example, pos, tag & 7)
            continue
        length, pos = _varint(example, pos)
        end = pos + length
        while pos < end:
            etag, pos = _varint(example, pos)
            if etag != 0x0A:  # Features.feature = 1 (map entries)
                pos = _skip(example, pos, etag & 7)
                continue
            elen, pos = _varint(example, pos)
            entry_end = pos + elen
            key = value = None
            while pos < entry_end:
                ftag, pos = _varint(example, pos)
                if ftag & 7 != 2:
                    pos = _skip(example, pos, ftag & 7)
                    continue
                flen, pos = _varint(example, pos)
                if ftag >> 3 == 1:
                    key = example[pos:pos + flen]
                elif ftag >> 3 == 2:
                    value = (pos, pos + flen)
                pos += flen
            slot = wanted.get(key)
            if slot is not None and value is not None and not seen[slot]:
                seen[slot] = True
                out[slot] = _first_of_feature(example, *value)
            pos = entry_end
        pos = end
    return out


def _varints(buf: np.ndarray, pos: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, positions after, still ok) of the protobuf varints at `pos` (where `ok`), all at once."""
    value = np.zeros(len(pos), dtype=np.uint64)
    after = pos.copy()
    going = ok.copy()
    last = len(buf) - 1
    for k in range(10):
        byte = buf[np.minimum(pos + k, last)].astype(np.uint64)
        value[going] |= (byte[going] & np.uint64(0x7F)) << np.uint64(7 * k)
        after[going] = pos[going] + k + 1
        going &= byte >= 0x80
        if not going.any():
            break
    return value, after, ok & ~going & (after <= len(buf))


def first_values_vectorized(buffer, starts: np.ndarray, lengths: np.ndarray, names: list[str]):
    """`first_values` for every record at once, in NumPy, for the usual layout (an Example holding
    only its features map, each entry key then value, int64/float/bytes lists). Returns (per name:
    the list of values with None where absent, the records it could not read): those are read by
    `first_values`, one at a time."""
    n = len(starts)
    if not n:
        return {name: [] for name in names}, np.zeros(0, dtype=np.int64)
    buf = np.frombuffer(buffer, dtype=np.uint8)
    last = len(buf) - 1
    end = starts + lengths
    at = lambda where: buf[np.minimum(where, last)]  # noqa: E731 - a clipped gather
    fallback = np.zeros(n, dtype=bool)
    has = starts < end
    fallback |= has & (at(starts) != 0x0A)
    flen, cur, ok = _varints(buf, starts + 1, has & ~fallback)
    fallback |= has & ~ok
    fend = cur + flen.astype(np.int64)
    fallback |= has & (fend != end)  # only the features field: anything else goes the slow way
    active = has & ~fallback
    found = {name: np.zeros(n, dtype=bool) for name in names}
    kind = {name: np.zeros(n, dtype=np.int8) for name in names}  # 1 bytes, 2 float, 3 int, 0 none
    ints = {name: np.zeros(n, dtype=np.int64) for name in names}
    floats = {name: np.zeros(n, dtype=np.float64) for name in names}
    spans = {name: np.zeros((n, 2), dtype=np.int64) for name in names}
    while True:
        active &= (cur < fend) & ~fallback
        if not active.any():
            break
        fallback |= active & (at(cur) != 0x0A)
        elen, epos, ok = _varints(buf, cur + 1, active & ~fallback)
        fallback |= active & ~ok
        eend = epos + elen.astype(np.int64)
        fallback |= active & ((at(epos) != 0x0A) | (eend > fend))
        klen, kpos, ok = _varints(buf, epos + 1, active & ~fallback)
        fallback |= active & ~ok
        kend = kpos + klen.astype(np.int64)
        fallback |= active & (at(kend) != 0x12)
        vlen, vpos, ok = _varints(buf, kend + 1, active & ~fallback)
        fallback |= active & (~ok | (vpos + vlen.astype(np.int64) != eend))
        live = active & ~fallback
        for name in names:
            key = np.frombuffer(name.encode(), dtype=np.uint8)
            match = live & (klen == len(key)) & ~found[name]
            for j, byte in enumerate(key.tolist()):
                match &= at(kpos + j) == byte
            if not match.any():
                continue
            found[name] |= match
            tag = at(vpos)
            llen, lpos, ok = _varints(buf, vpos + 1, match)
            fallback |= match & (~ok | ~np.isin(tag, (0x0A, 0x12, 0x1A)))
            match &= ~fallback
            listed = match & (llen > 0)
            inner = at(lpos)
            packed = listed & (inner == 0x0A)
            plen, ppos, ok = _varints(buf, lpos + 1, packed)
            fallback |= packed & ~ok
            first = np.where(packed, ppos, lpos + 1)
            nonempty = listed & (~packed | (plen > 0))  # an empty packed list: no value (None)
            is_int = nonempty & (tag == 0x1A) & (packed | (inner == 0x08))
            is_float = nonempty & (tag == 0x12) & ((packed & (plen >= 4)) | (inner == 0x0D))
            is_bytes = listed & (tag == 0x0A) & (inner == 0x0A)  # b"" is a value
            nonempty |= is_bytes
            fallback |= nonempty & ~(is_int | is_float | is_bytes)
            value, _, ok = _varints(buf, first, is_int)
            fallback |= is_int & ~ok
            ints[name][is_int] = value[is_int].view(np.int64)
            kind[name][is_int] = 3
            if is_float.any():
                rows = np.flatnonzero(is_float)
                raw = buf[np.minimum(first[rows, None] + np.arange(4), last)].copy()
                floats[name][rows] = raw.view("<f4").reshape(-1)
                kind[name][is_float] = 2
            if is_bytes.any():  # bytes_list: the first value is itself length-prefixed, at lpos + 1
                spans[name][is_bytes, 0] = ppos[is_bytes]
                spans[name][is_bytes, 1] = plen.astype(np.int64)[is_bytes]
                kind[name][is_bytes] = 1
        cur = np.where(active, eend, cur)
    out = {}
    for name in names:
        values: list = [None] * n
        for k, rows in ((3, np.flatnonzero(kind[name] == 3)), (2, np.flatnonzero(kind[name] == 2))):
            source = ints[name] if k == 3 else floats[name]
            for row, v in zip(rows.tolist(), source[rows].tolist()):
                values[row] = v
        for row in np.flatnonzero(kind[name] == 1).tolist():
            a, b = spans[name][row]
            values[row] = bytes(buffer[a:a + b])
        out[name] = values
    return out, np.flatnonzero(fallback)


def pack_column(values: list) -> tuple[str, dict[str, np.ndarray]]:
    """(kind, arrays) of one feature's per-record values (None = absent) for the index."""
    present = np.array([v is not None for v in values], dtype=bool)
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int}:
        data = np.array([v if v is not None else 0 for v in values], dtype=np.int64)
        return "int", {"values": data, "present": present}
    if kinds <= {float}:
        return "float", {"values": np.array([v if v is not None else 0.0 for v in values], dtype=np.float64),
                         "present": present}
    if kinds <= {bytes}:
        parts = [v if v is not None else b"" for v in values]
        ends = np.cumsum([len(p) for p in parts], dtype=np.int64)
        return "bytes", {"values": np.frombuffer(b"".join(parts), dtype=np.uint8).copy(), "ends": ends,
                         "present": present}
    return "mixed", {"present": present}


def unpack_column(kind: str, arrays: dict[str, np.ndarray]) -> list | None:
    """The per-record values packed by `pack_column` (None where absent), or None for "mixed"."""
    present = arrays["present"]
    if kind == "int":
        values = arrays["values"].tolist()
    elif kind == "float":
        values = arrays["values"].tolist()
    elif kind == "bytes":
        blob, ends = arrays["values"].tobytes(), arrays["ends"].tolist()
        starts = [0] + ends[:-1]
        values = [blob[a:b] for a, b in zip(starts, ends)]
    else:
        return None
    if not present.all():
        for i in np.flatnonzero(~present).tolist():
            values[i] = None
    return values


# --------------------------------------------------------------------------- the format
@dataclass(frozen=True)
class TFRecordIndex:
    """How a TFRecord file is indexed (an `index.IndexFormat`).

    Args:
        compression: "" | GZIP | ZLIB (data.compression).
        columns: the features whose first value per record is kept (label, shard key).
        histogram: the feature whose value counts go in the meta (the label), or None.
    """

    compression: str = ""
    columns: tuple[str, ...] = ()
    histogram: str | None = None
    kind = "tfrecord"
    version = 1

    def build(self, path: str) -> tuple[dict[str, np.ndarray], dict]:
        wanted = {name.encode(): slot for slot, name in enumerate(self.columns)}
        values: list[list] = [[] for _ in self.columns]
        if self.compression:
            offsets, lengths = [], []
            for index, (offset, payload) in enumerate(_records(path, self.compression, read_data=True)):
                offsets.append(offset)
                lengths.append(len(payload))
                self._collect(path, index, offset, payload, wanted, values)
            offsets_a, lengths_a = np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64)
        else:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
                try:
                    offsets_a, lengths_a = frame(path, buffer, size)
                    if self.columns:
                        values = self._collect_all(path, buffer, offsets_a, lengths_a, wanted)
                finally:
                    if size:
                        buffer.close()
        arrays = {"offsets": offsets_a, "lengths": lengths_a}
        kinds = {}
        histograms = {}
        for slot, name in enumerate(self.columns):
            kind, packed = pack_column(values[slot])
            kinds[name] = kind
            for part, array in packed.items():
                arrays[f"column{slot}_{part}"] = array
            if name == self.histogram and kind == "int":
                present = packed["values"][packed["present"]]
                uniques, counts = np.unique(present, return_counts=True)
                if len(uniques) <= MAX_HISTOGRAM:
                    histograms[name] = {str(u): int(c) for u, c in zip(uniques.tolist(), counts.tolist())}
        end = int(offsets_a[-1] + FRAME + lengths_a[-1]) if len(offsets_a) else 0
        return arrays, {"records": len(offsets_a), "compression": self.compression, "stream_bytes": end,
                        "columns": list(self.columns), "column_kinds": kinds, "histograms": histograms}

    def _collect_all(self, path, buffer, offsets, lengths, wanted) -> list[list]:
        """The wanted features' first values in every record: vectorized (`first_values_vectorized`),
        records of another layout one by one, and a sample of records checked one by one too (any
        disagreement: every record the slow, sure way)."""
        values: list[list] = [[] for _ in self.columns]
        names = list(self.columns)
        fast: dict | None = {name: [] for name in names}
        slow_parts = []
        for a in range(0, len(offsets), BLOCK):  # a block at a time: memory bounded whatever the file's size
            block, block_slow = first_values_vectorized(buffer, offsets[a:a + BLOCK] + HEADER, lengths[a:a + BLOCK],
                                                        names)
            for name in names:
                fast[name] += block[name]
            slow_parts.append(block_slow + a)
        slow = np.concatenate(slow_parts) if slow_parts else np.zeros(0, dtype=np.int64)
        sample = np.unique(np.concatenate([np.arange(min(32, len(offsets))),
                                           np.random.default_rng(0).integers(0, max(1, len(offsets)), 32)
                                           if len(offsets) else np.zeros(0, np.int64), slow])).tolist()
        slow_set = set(slow.tolist())
        for index in sample:
            offset, length = int(offsets[index]), int(lengths[index])
            start = offset + HEADER
            one: list[list] = [[] for _ in self.columns]
            self._collect(path, index, offset, buffer[start:start + length], wanted, one)
            for slot, name in enumerate(names):
                if index in slow_set:
                    fast[name][index] = one[slot][0]
                elif fast[name][index] != one[slot][0] or type(fast[name][index]) is not type(one[slot][0]):
                    fast = None  # the vectorized reading disagrees: read every record one by one
                    break
            if fast is None:
                break
        if fast is None:
            for index, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist())):
                start = offset + HEADER
                self._collect(path, index, offset, buffer[start:start + length], wanted, values)
            return values
        return [fast[name] for name in names]

    @staticmethod
    def _collect(path, index, offset, payload, wanted, values) -> None:
        try:
            found = first_values(payload, wanted)
        except (ValueError, IndexError, struct.error):
            raise RecordError(path, index, offset, "not a tf.train.Example (corrupt payload)") from None
        for slot, value in enumerate(found):
            values[slot].append(value)

    def satisfies(self, meta: dict) -> str | None:
        if meta.get("compression") != self.compression:
            return f"was built for data.compression={meta.get('compression')!r}"
        missing = [c for c in self.columns if c not in meta.get("columns", [])]
        if missing:
            return f"holds no values of feature(s) {', '.join(missing)}"
        if self.histogram and self.histogram not in meta.get("columns", []):
            return f"holds no histogram of {self.histogram}"
        return None

    def merged(self, meta: dict) -> "TFRecordIndex":
        """This format, also keeping the features an existing index of the file kept."""
        previous = [c for c in meta.get("columns", []) if isinstance(c, str) and c not in self.columns]
        return replace(self, columns=self.columns + tuple(previous))

    def check(self, path: str, index) -> str | None:
        meta, arrays = index.meta, index.arrays
        offsets, lengths = arrays.get("offsets"), arrays.get("lengths")
        n = meta.get("records")
        if offsets is None or lengths is None or offsets.dtype != np.int64 or lengths.dtype != np.int64:
            return "no int64 offsets/lengths"
        if not isinstance(n, int) or len(offsets) != n or len(lengths) != n:
            return f"{len(offsets)} offsets, {len(lengths)} lengths for {n} records"
        if n:
            if offsets[0] != 0 or np.any(lengths < 0) or np.any(offsets[1:] != offsets[:-1] + FRAME + lengths[:-1]):
                return "the offsets do not follow each other"
            if int(offsets[-1] + FRAME + lengths[-1]) != meta.get("stream_bytes"):
                return "the offsets do not end where the stream does"
        for slot, name in enumerate(meta.get("columns", [])):
            kind = meta.get("column_kinds", {}).get(name)
            if kind not in KINDS:
                return f"unknown kind {kind!r} of feature {name}"
            present = arrays.get(f"column{slot}_present")
            if present is None or present.dtype != bool or len(present) != n:
                return f"the values of feature {name} do not match the records"
            if kind in ("int", "float") and len(arrays.get(f"column{slot}_values", ())) != n:
                return f"the values of feature {name} do not match the records"
            if kind == "bytes":
                ends = arrays.get(f"column{slot}_ends")
                blob = arrays.get(f"column{slot}_values")
                if ends is None or blob is None or len(ends) != n or (n and int(ends[-1]) != len(blob)):
                    return f"the values of feature {name} do not match the records"
        if not self.compression:
            size = os.path.getsize(path)
            if meta.get("stream_bytes") != size:
                return f"it ends at byte {meta.get('stream_bytes')}, the file has {size}"
            if n:  # the headers at the first and last offsets must be real record headers
                with open(path, "rb") as f:
                    for i in sorted({0, n // 2, n - 1}):
                        header = os.pread(f.fileno(), HEADER, int(offsets[i]))
                        row = np.frombuffer(header, dtype=np.uint8)[None, :]
                        length, crc = struct.unpack("<QI", header)
                        if length != lengths[i] or masked_crc32c_rows(row[:, :8])[0] != crc:
                            return f"no record header of {int(lengths[i])} bytes at byte {int(offsets[i])}"
        return None


def column(indexes, name: str) -> list | None:
    """The values of indexed feature `name` over `indexes` (files in order), or None when some file
    could not keep them (kind "mixed")."""
    out: list = []
    for ix in indexes:
        slot = ix.meta["columns"].index(name)
        kind = ix.meta["column_kinds"][name]
        arrays = {part: ix.arrays[f"column{slot}_{part}"] for part in ("values", "ends", "present")
                  if f"column{slot}_{part}" in ix.arrays}
        values = unpack_column(kind, arrays)
        if values is None:
            return None
        out.extend(values)
    return out


def int_column(indexes, name: str) -> np.ndarray | None:
    """The values of an int feature over `indexes` as one int64 array (no Python list), or None when
    any file's values are not all present ints."""
    parts = []
    for ix in indexes:
        slot = ix.meta["columns"].index(name)
        if ix.meta["column_kinds"][name] != "int" or not ix.arrays[f"column{slot}_present"].all():
            return None
        parts.append(ix.arrays[f"column{slot}_values"])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- seeking
@dataclass(frozen=True)
class Chunk:
    """One read of a file: the byte ranges (`starts`, `sizes`) concatenated hold the payloads at
    `positions` (in the concatenation) of `lengths` bytes, in record order."""

    file: int
    starts: np.ndarray
    sizes: np.ndarray
    positions: np.ndarray
    lengths: np.ndarray

    @property
    def bytes(self) -> int:
        return int(self.sizes.sum())


def byte_ranges(offsets: np.ndarray, lengths: np.ndarray, records: np.ndarray, *, file: int = 0,
                max_gap: int = 0, max_records: int = 1024, max_bytes: int = 8 << 20, footer: int = 4) -> list[Chunk]:
    """The reads that fetch the payloads of `records` (sorted local ids) of one file, each with the
    `footer` bytes after it (its checksum), grouped in chunks of at most `max_records` records /
    about `max_bytes` payload bytes. Within a chunk, payloads closer than `max_gap` bytes share one
    byte range (the bytes between them are read and dropped: fewer system calls against more bytes;
    0 reads exactly the kept records)."""
    records = np.asarray(records, dtype=np.int64)
    if not len(records):
        return []
    starts = offsets[records] + HEADER
    sizes = lengths[records]
    ends = starts + sizes + footer
    by_bytes = (np.cumsum(sizes) - sizes) // max(1, max_bytes)
    by_count = np.arange(len(records)) // max(1, max_records)
    cuts = np.flatnonzero((np.diff(by_bytes) != 0) | (np.diff(by_count) != 0)) + 1
    out = []
    for a, b in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(records)]]).tolist()):
        s, e = starts[a:b], ends[a:b]
        new_range = np.concatenate([[True], s[1:] - e[:-1] > max_gap])
        first = np.flatnonzero(new_range)
        last = np.concatenate([first[1:], [b - a]]) - 1
        range_starts, range_sizes = s[first], e[last] - s[first]
        base = np.concatenate([[0], np.cumsum(range_sizes)[:-1]])  # where each range lands in the blob
        which = np.cumsum(new_range) - 1
        out.append(Chunk(file, range_starts, range_sizes, base[which] + (s - range_starts[which]), sizes[a:b]))
    return out


def check_payloads(path: str, blob: bytes, chunk: Chunk, records: np.ndarray | None = None) -> None:
    """Each payload of `chunk` in `blob` against the masked CRC-32C stored after it, as TensorFlow's
    reader checks every record: a flipped bit is an error naming the file and record, never a wrong
    feature value trained on. (`records`: the chunk's local record ids, for the message.)"""
    import google_crc32c

    value, from_bytes = google_crc32c.value, int.from_bytes
    for i, (position, length) in enumerate(zip(chunk.positions.tolist(), chunk.lengths.tolist())):
        crc = value(blob[position:position + length])  # (it takes bytes only, not a memoryview)
        masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
        if masked != from_bytes(blob[position + length:position + length + 4], "little"):
            where = f"record {int(records[i])}" if records is not None else f"record at byte {position}"
            raise ValueError(f"{path}: {where}: corrupt record (payload checksum mismatch)")
