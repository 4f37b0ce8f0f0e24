"""Reading only the records a pipeline keeps, by byte range (seek, not scan), as tf.data.

A format that knows where each record is (an index: `tfrecord_index.byte_ranges`) hands over chunks:
byte ranges of a file whose concatenation holds a batch of payloads at known positions. Each chunk is
one element: its ranges are read with `os.pread` (a few large reads; Python only per range, never per
record, and without the GIL while reading, so chunks are read in parallel), then split into the
serialized records with one vectorized `tf.strings.substr`, ready for a batched parser
(`tf.io.parse_example`). Order is kept (deterministic), so records come in the chunks' order.

It runs Python (`tf.numpy_function`) for the reads: a pipeline shipped to a tf.data service worker
cannot run it; such a pipeline reads by scan instead (see `Dataset.read_records`' callers).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

import numpy as np


class _Files:
    """Open file descriptors of the chunks' files, opened on first use, closed when collected."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self.fds: dict[int, int] = {}
        self.lock = threading.Lock()

    def fd(self, index: int) -> int:
        fd = self.fds.get(index)
        if fd is None:
            with self.lock:
                fd = self.fds.get(index)
                if fd is None:
                    fd = self.fds[index] = os.open(self.paths[index], os.O_RDONLY)
        return fd

    def __del__(self):
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


def read_chunks(paths: Sequence[str], chunks: Sequence[Any],
                check: Callable[[str, bytes, Any, int], None] | None = None) -> Any:
    """A tf.data.Dataset with one element per chunk: the chunk's serialized records (a string vector).

    Args:
        paths: the files; `chunk.file` indexes them.
        chunks: objects with `file`, `starts`, `sizes` (the byte ranges read), `positions`, `lengths`
            (the payloads within the ranges concatenated), e.g. `tfrecord_index.Chunk`.
        check: check(path, blob, chunk, chunk number) raising ValueError naming a corrupt record.
    """
    import tensorflow as tf

    files = _Files(paths)
    table = list(chunks)

    def read(i):
        chunk = table[int(i)]
        fd = files.fd(chunk.file)
        parts = []
        for start, size in zip(chunk.starts.tolist(), chunk.sizes.tolist()):
            data = os.pread(fd, size, start)
            if len(data) < size:  # the file shrank after it was indexed: never hand on half a record
                raise OSError(f"{paths[chunk.file]}: {size - len(data)} byte(s) missing at byte {start} "
                              "(the file changed after it was indexed)")
            parts.append(data)
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        if check is not None:
            check(paths[chunk.file], blob, chunk, int(i))
        return (np.array(blob, dtype=object), chunk.positions.astype(np.int64), chunk.lengths.astype(np.int64))

    def split(i):
        blob, positions, lengths = tf.numpy_function(read, [i], (tf.string, tf.int64, tf.int64), stateful=False)
        return tf.strings.substr(tf.reshape(blob, []), tf.reshape(positions, [-1]), tf.reshape(lengths, [-1]))

    return tf.data.Dataset.range(len(table)).map(split, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
