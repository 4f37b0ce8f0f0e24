"""TFRecord framing and tf.train.Example decoding in pure Python (no TensorFlow).

Used to count records and read label/key features for planning and sharding without importing
TensorFlow, and to name a truncated or corrupt file and record before training. Training reads the
same files with tf.data; `locate_corruption` (which does import TensorFlow) names the record behind a
checksum error that only a full read finds.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from typing import BinaryIO, Iterator

# A record is [uint64 length][uint32 masked crc32c of length][data][uint32 masked crc32c of data].
_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum (pure Python: used on the 8-byte length headers only, which is cheap)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class RecordError(ValueError):
    """A TFRecord file that cannot be read: which file, which record (0-based) and where."""

    def __init__(self, path: str, record: int, offset: int, problem: str):
        self.path, self.record, self.offset, self.problem = path, record, offset, problem
        super().__init__(f"{path}: record {record} (byte {offset}): {problem}")


def _open(path: str, compression: str = "") -> BinaryIO:
    from scaleflow.security.crypto import is_encrypted, open_input  # encrypted: decrypted in memory

    if compression == "GZIP":
        return gzip.GzipFile(fileobj=open_input(path), mode="rb") if is_encrypted(path) else gzip.open(path, "rb")
    if compression == "ZLIB":
        with open_input(path) as f:
            try:
                return io.BytesIO(zlib.decompress(f.read()))
            except zlib.error as e:
                raise RecordError(path, 0, 0, f"not a ZLIB stream (data.compression=ZLIB): {e}") from None
    return open_input(path)


def _records(path: str, compression: str, read_data: bool) -> Iterator[tuple[int, bytes | None]]:
    """(offset, payload or None) of each record; the framing is checked (a truncated file, a bad
    length header), so a bad file is named before TensorFlow reads it. Payload checksums are left to
    TensorFlow: checking them here in pure Python would cost a full read of every file."""
    from scaleflow.security.crypto import is_encrypted

    size = os.path.getsize(path) if not compression and not is_encrypted(path) else None
    with _open(path, compression) as f:
        index = offset = 0
        while True:
            try:
                header = f.read(12)
            except (OSError, EOFError, zlib.error) as e:  # gzip: a truncated or non-gzip file
                raise RecordError(path, index, offset, f"cannot decompress ({compression}): {e}") from None
            if not header:
                return
            if len(header) < 12:
                raise RecordError(path, index, offset, f"truncated: the file ends inside a record header "
                                  f"({len(header)} of 12 bytes)")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise RecordError(path, index, offset, "corrupt record header (length checksum mismatch)"
                                  + ("" if compression else "; is this a TFRecord file (or a compressed one: "
                                     "data.compression=GZIP|ZLIB)?"))
            end = offset + 12 + length + 4
            if size is not None and end > size:
                raise RecordError(path, index, offset, f"truncated: the record needs {length + 16} bytes, "
                                  f"the file has {size - offset} left")
            if read_data or compression:
                try:
                    data = f.read(length)
                    footer = f.read(4)
                except (OSError, EOFError, zlib.error) as e:
                    raise RecordError(path, index, offset, f"cannot decompress ({compression}): {e}") from None
                if len(data) < length or len(footer) < 4:
                    raise RecordError(path, index, offset, "truncated: the file ends inside the record")
                yield offset, data if read_data else None
            else:
                f.seek(length + 4, 1)
                yield offset, None
            index, offset = index + 1, end


def iter_records(path: str, compression: str = "") -> Iterator[bytes]:
    """Payloads of a TFRecord file; RecordError names the file and record of a bad one."""
    for _, data in _records(path, compression, read_data=True):
        yield data


def records(path: str, compression: str = "") -> Iterator[tuple[int, bytes]]:
    """(byte offset, payload) of each record of a TFRecord file."""
    return _records(path, compression, read_data=True)


def write_records(path: str, payloads: list[bytes]) -> None:
    """Write an uncompressed TFRecord file in pure Python (small files: e.g. TF Serving's warm-up)."""
    with open(path, "wb") as f:
        for data in payloads:
            header = struct.pack("<Q", len(data))
            f.write(header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data)))


def count_records(path: str, compression: str = "") -> int:
    """Records in a TFRecord file (seeking over payloads); RecordError for a truncated or corrupt one."""
    return sum(1 for _ in _records(path, compression, read_data=False))


def locate_corruption(path: str, compression: str = "") -> RecordError | None:
    """The first record of `path` whose payload checksum is wrong (TensorFlow's "corrupted record"),
    checked with TensorFlow's own reader record by record; None when the file reads cleanly."""
    import tensorflow as tf

    offsets = [o for o, _ in _records(path, compression, read_data=False)]
    index = 0
    try:
        for _ in tf.data.TFRecordDataset(path, compression_type=compression or None):
            index += 1
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        offset = offsets[index] if index < len(offsets) else 0
        first = str(e.message if hasattr(e, "message") else e).strip().splitlines()[0]
        return RecordError(path, index, offset, f"corrupt record ({first})")
    return None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def feature_value(example: bytes, name: str) -> object:
    """The first value of feature `name` in a serialized tf.train.Example (None when absent).
    Returns bytes, float or int depending on the feature's list type."""
    target = name.encode()
    for number, _, features in _fields(example):  # Example.features = 1
        if number != 1:
            continue
        for fnum, _, entry in _fields(features):  # Features.feature = 1 (map entries)
            if fnum != 1:
                continue
            key = value = None
            for enum, _, v in _fields(entry):
                if enum == 1:
                    key = v
                elif enum == 2:
                    value = v
            if key != target or value is None:
                continue
            for kind, wire, lst in _fields(value):  # bytes_list=1, float_list=2, int64_list=3
                for vnum, vwire, v in _fields(lst):
                    if vnum != 1:
                        continue
                    if kind == 1:
                        return v
                    if kind == 2:
                        return struct.unpack("<f", v[:4])[0]
                    if kind == 3:
                        if vwire == 2:  # packed
                            first, _ = _varint(v, 0)
                            return first - (1 << 64) if first >= 1 << 63 else first
                        return v - (1 << 64) if v >= 1 << 63 else v
                return None
    return None
