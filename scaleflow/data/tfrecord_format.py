"""TFRecord framing and tf.train.Example decoding in pure Python (no TensorFlow).

Used to count records and read label/key features for planning and sharding without importing
TensorFlow. Training reads the same files with tf.data.
"""

from __future__ import annotations

import struct
from typing import Iterator


def iter_records(path: str) -> Iterator[bytes]:
    """Payloads of a TFRecord file: [uint64 length][uint32 crc][data][uint32 crc] repeated."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            f.read(4)
            if len(data) < length:
                raise ValueError(f"{path}: truncated TFRecord")
            yield data


def count_records(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if not header:
                return n
            (length,) = struct.unpack("<Q", header[:8])
            f.seek(length + 4, 1)
            n += 1


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
