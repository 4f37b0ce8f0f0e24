"""Per-data-file indexes: built once, reused while the file is unchanged, never trusted blindly.

An index holds what describing and sharding need to know about one data file (record count, byte
offsets, per-record label or key values, row groups...), so describing a dataset costs O(files), not
O(records), after the first time. This module owns what every format shares; a format supplies an
`IndexFormat` (what to build, what a stored index must hold, a cheap format check). Pure NumPy:
config-only modes (mode=shards, mode=plan) read indexes without TensorFlow.

Where (`IndexOptions.locations`):
  data.index_dir unset  next to the data file as `.<file name>.sfindex` (hidden: directory listings
                        and globs skip it), or, when the data directory is not writable, in the user
                        cache (`$XDG_CACHE_HOME/scaleflow/index`, else `~/.cache/scaleflow/index`)
  data.index_dir set    always there, as `<digest of the file's absolute path>-<file name>.sfindex`

When it is stale (`data.index_check`):
  stat      the file's size or modification time (ns) differs from those recorded (the default: free)
  checksum  the file's SHA-256 differs (a full read of each file per describe; for copies that keep
            the size and mtime, e.g. `rsync -t`, or file systems with coarse timestamps)

Trust: an index that cannot be read, is of another version, kind or file, has inconsistent arrays or
fails the format's own cheap check (e.g. record headers at the recorded offsets) is rebuilt, with a
warning saying why; it is never used.

Concurrency: one process builds a file's index under an exclusive flock of the data file itself
(read-only is enough, nothing is left behind; where the file system refuses, e.g. NFS, a lock file
`<index>.lock` beside the index), released by the kernel if the holder dies, while the others wait,
then read it; the index is written
to a temporary file in the same directory and renamed, so nobody reads half of one. Several workers
describing the same files build different files at once (`open_indexes` skips files another process
is building and comes back to them). A data file whose size or mtime changes while it is being
indexed is a DataError naming it.

File format: NumPy `.npz` (no pickle) holding the format's arrays and `__meta__`, a JSON document.

Example (a format; see `tfrecord_index.TFRecordIndex` for a real one):

    @dataclass(frozen=True)
    class LineIndex:
        kind = "lines"
        version = 1

        def build(self, path):
            ends = np.flatnonzero(np.frombuffer(open(path, "rb").read(), np.uint8) == 10) + 1
            return {"ends": ends}, {"records": len(ends)}

        def satisfies(self, meta):      # why a valid stored index does not hold what is needed now
            return None

        def merged(self, meta):         # the format to rebuild with (e.g. union of stored columns)
            return self

        def check(self, path, index):   # why the arrays cannot be trusted (cheap), or None
            return None

    [ix] = open_indexes(["data.txt"], LineIndex(), IndexOptions())
    ix.meta["records"], ix.status        # (1000, 'built'); the next call says 'reused'
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from scaleflow.errors import DataError

log = logging.getLogger("scaleflow")

INDEX_VERSION = 1
SUFFIX = ".sfindex"
META = "__meta__"
# A process waits this long for another that builds an index (it holds the lock only while alive).
LOCK_TIMEOUT_S = 1800.0
INDEX_MODES = ("auto", "off")
INDEX_CHECKS = ("stat", "checksum")


class IndexFormat(Protocol):
    kind: str
    version: int

    def build(self, path: str) -> tuple[dict[str, np.ndarray], dict]: ...

    def satisfies(self, meta: dict) -> str | None: ...

    def merged(self, meta: dict) -> "IndexFormat": ...

    def check(self, path: str, index: "FileIndex") -> str | None: ...


@dataclass(frozen=True)
class IndexOptions:
    """How indexes are used: `data.index` (auto | off), `data.index_dir`, `data.index_check`.

    Example:
        >>> IndexOptions.from_config(cfg.data).locations("/data/part-0.tfrecord")[0]
        '/data/.part-0.tfrecord.sfindex'
    """

    mode: str = "auto"
    index_dir: str | None = None
    check: str = "stat"

    @classmethod
    def from_config(cls, config: Any) -> "IndexOptions":
        get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
        index_dir = get("index_dir", None)
        return cls(mode=get("index", "auto") or "auto",
                   index_dir=os.path.abspath(os.path.expanduser(index_dir)) if index_dir else None,
                   check=get("index_check", "stat") or "stat")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def locations(self, path: str) -> list[str]:
        """Where the index of `path` may be, in the order they are read; the first writable one is
        where a new index is written."""
        path = os.path.abspath(path)
        name = os.path.basename(path)
        cached = f"{hashlib.sha256(path.encode()).hexdigest()[:16]}-{name}{SUFFIX}"
        if self.index_dir:
            return [os.path.join(self.index_dir, cached)]
        return [os.path.join(os.path.dirname(path), f".{name}{SUFFIX}"), os.path.join(user_cache_dir(), cached)]


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "scaleflow", "index")


@dataclass
class FileIndex:
    """One data file's index.

    Args:
        path: the data file.
        location: the index file.
        meta: the JSON document (the format's fields plus `source`: size, mtime_ns, sha256).
        arrays: the format's arrays.
        status: 'reused', 'built' or 'rebuilt: <why the old one was not used>'.
    """

    path: str
    location: str
    meta: dict
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)  # LazyArrays once on disk
    status: str = "reused"


# --------------------------------------------------------------------------------- staleness
def file_stamp(path: str, checksum: bool) -> dict:
    st = os.stat(path)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if checksum:
        stamp["sha256"] = sha256_of(path)
    return stamp


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def why_stale(meta: dict, path: str, options: IndexOptions) -> str | None:
    """Why the index recorded by `meta` does not describe `path` as it is now, or None."""
    source = meta.get("source") or {}
    st = os.stat(path)
    if source.get("size") != st.st_size:
        return f"the file's size changed ({source.get('size')} -> {st.st_size} bytes)"
    if options.check == "checksum":
        if not source.get("sha256"):
            return "it records no checksum (built with data.index_check=stat)"
        if source["sha256"] != sha256_of(path):
            return "the file's SHA-256 changed"
        return None
    if source.get("mtime_ns") != st.st_mtime_ns:
        return "the file's modification time changed"
    return None


# --------------------------------------------------------------------------------- read / write
class CorruptIndex(ValueError):
    """An index file that cannot be used: unreadable, foreign or inconsistent."""


class LazyArrays(Mapping):
    """The arrays of an index file, each read from it when asked and not kept, so a described dataset
    holds O(files) in memory whatever its record count. A read fails (CorruptIndex) if the file was
    replaced since its index was checked."""

    def __init__(self, location: str, names: Sequence[str]):
        self.location, self.names = location, [n for n in names if n != META]
        self.stamp = _stamp(location)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(name)
        if _stamp(self.location) != self.stamp:
            raise CorruptIndex(f"{self.location} was replaced while in use")
        try:
            with np.load(self.location, allow_pickle=False) as npz:
                return npz[name]  # the zip member's CRC is checked as it is read
        except Exception as e:  # BadZipFile, ValueError (pickled object), OSError, EOFError...
            raise CorruptIndex(f"unreadable {name} ({type(e).__name__}: {e})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _stamp(location: str) -> tuple:
    st = os.stat(location)
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_index(location: str, lazy: bool = False) -> tuple[dict, Mapping[str, np.ndarray]]:
    """(meta, arrays) of an index file (arrays read on access when `lazy`); CorruptIndex saying why
    it cannot be read."""
    try:
        with np.load(location, allow_pickle=False) as npz:
            if lazy:
                names = list(npz.files)
                arrays: dict = {META: npz[META]} if META in names else {}
            else:
                arrays = {name: npz[name] for name in npz.files}  # zip CRCs checked as each is read
    except FileNotFoundError:
        raise
    except Exception as e:  # BadZipFile, ValueError (pickled object), OSError, EOFError...
        raise CorruptIndex(f"unreadable ({type(e).__name__}: {e})") from None
    raw = arrays.pop(META, None)
    if raw is None or raw.dtype != np.uint8:
        raise CorruptIndex("no metadata")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptIndex(f"unreadable metadata ({e})") from None
    if not isinstance(meta, dict):
        raise CorruptIndex("unreadable metadata")
    return meta, (LazyArrays(location, names) if lazy else arrays)


def write_index(location: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a temporary file in the same directory, fsynced, then renamed."""
    directory = os.path.dirname(location)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=SUFFIX)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # readable like any file this user writes (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as f:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays, **{META: np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)})
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, location)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _trusted(path: str, location: str, fmt: IndexFormat, options: IndexOptions) -> tuple[FileIndex | None, str]:
    """(the index at `location` if it can be used for `path` now, else None; why not)."""
    try:
        meta, arrays = read_index(location, lazy=True)
    except FileNotFoundError:
        return None, ""
    except CorruptIndex as e:
        return None, f"corrupt index {location}: {e}"
    expected = {"scaleflow_index": INDEX_VERSION, "kind": fmt.kind, "format_version": fmt.version,
                "file": os.path.basename(path)}
    for key, value in expected.items():
        if meta.get(key) != value:
            return None, f"index {location} has {key}={meta.get(key)!r}, not {value!r}"
    stale = why_stale(meta, path, options)
    if stale:
        return None, f"stale index {location}: {stale}"
    index = FileIndex(path, location, meta, arrays)
    try:
        problem = fmt.check(path, index)
    except Exception as e:  # an index inconsistent enough to break the check is corrupt, never a crash
        problem = f"{type(e).__name__}: {e}"
    if problem:
        return None, f"corrupt index {location}: {problem}"
    unmet = fmt.satisfies(meta)
    if unmet:
        return None, f"index {location} {unmet}"
    return index, ""


# --------------------------------------------------------------------------------- locking
@contextlib.contextmanager
def file_lock(lock_path: str, *, blocking: bool, what: str, timeout_s: float = LOCK_TIMEOUT_S,
              create: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `lock_path` (made when `create`, else opened read-only); yields
    False at once when `blocking` is False and another process holds it. Waiting is bounded:
    DataError naming the lock after `timeout_s`."""
    import fcntl

    if create:
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT if create else os.O_RDONLY, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        next_note = time.monotonic() + 30
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking:
                    yield False
                    return
                now = time.monotonic()
                if now > deadline:
                    raise DataError(what, f"another process has held {lock_path} for over {timeout_s:.0f} s "
                                    "while indexing it", hint="Check for a hung scaleflow process, or set "
                                    "data.index=off") from None
                if now > next_note:
                    log.info("waiting for %s: another process is indexing %s", lock_path, what)
                    next_note = now + 30
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------------- building
def build_index(path: str, fmt: IndexFormat, options: IndexOptions) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a new index of `path`; DataError naming the file if it changed meanwhile."""
    before = os.stat(path)
    stamp = file_stamp(path, options.check == "checksum")
    arrays, meta = fmt.build(path)
    after = os.stat(path)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise DataError(path, f"changed while it was being indexed (size {before.st_size} -> {after.st_size} "
                        "bytes, or its modification time)", hint="Index it once nothing writes to it any more "
                        "(python -m scaleflow mode=index ...)")
    return ({"scaleflow_index": INDEX_VERSION, "kind": fmt.kind, "format_version": fmt.version,
             "file": os.path.basename(path), "source": stamp,
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}, arrays)


def _writable(directory: str) -> bool:
    probe = directory
    while not os.path.isdir(probe):  # a cache dir not made yet: its nearest existing parent
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    return os.access(probe, os.W_OK | os.X_OK)


def _target(path: str, options: IndexOptions) -> str:
    for location in options.locations(path):
        if _writable(os.path.dirname(location)):
            return location
    raise DataError(path, "no writable place for its index (the data directory and "
                    f"{os.path.dirname(options.locations(path)[-1])} are read-only)",
                    hint="Set data.index_dir to a writable directory, or data.index=off")


@contextlib.contextmanager
def _build_lock(path: str, location: str, blocking: bool) -> Iterator[bool]:
    """The lock of building `path`'s index: a flock of the data file, else of `<index>.lock`."""
    import fcntl

    try:  # can this file system flock the data file exclusively, opened read-only? (NFS cannot)
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            lockable = True
        except BlockingIOError:  # held exclusively by a builder: flock works here
            lockable = True
        except OSError:
            lockable = False
        finally:
            os.close(fd)
    except OSError:
        lockable = False
    target, create = (path, False) if lockable else (location + ".lock", True)
    with file_lock(target, blocking=blocking, what=path, create=create) as held:
        yield held


def _open_one(path: str, fmt: IndexFormat, options: IndexOptions, blocking: bool) -> FileIndex | None:
    """The index of `path`: read if trustworthy, else built under the lock. None when not
    `blocking` and another process is building it."""
    reasons = []
    for location in options.locations(path):
        found, why = _trusted(path, location, fmt, options)
        if found is not None:
            return found
        if why:
            reasons.append(why)
    location = _target(path, options)
    try:
        with _build_lock(path, location, blocking) as held:
            if not held:
                return None
            found, why = _trusted(path, location, fmt, options)  # built by another while we waited?
            if found is not None:
                found.status = "reused"
                return found
            previous = None
            with contextlib.suppress(FileNotFoundError, CorruptIndex):
                previous, _ = read_index(location)
            builder = fmt.merged(previous) if previous is not None and previous.get("kind") == fmt.kind else fmt
            meta, arrays = build_index(path, builder, options)
            write_index(location, meta, arrays)
            del arrays  # read again when needed: a described dataset holds O(files)
            arrays = LazyArrays(location, read_index(location, lazy=True)[1].names)
    except PermissionError as e:
        raise DataError(path, f"cannot write its index ({e})",
                        hint="Set data.index_dir to a writable directory, or data.index=off") from None
    except OSError as e:  # e.g. no locks on this file system (ENOLCK), a full disk
        raise DataError(path, f"cannot index it ({e.strerror or e})",
                        hint="Set data.index_dir to a local writable directory, or data.index=off") from None
    status = "built" if not reasons else "rebuilt: " + "; ".join(reasons)
    for why in reasons:  # a corrupt or stale index is news; one lacking a column just grows
        (log.warning if why.startswith(("corrupt", "stale")) else log.info)("rebuilding the index of %s: %s",
                                                                             path, why)
    return FileIndex(path, location, meta, arrays, status)


def open_indexes(paths: Sequence[str], fmt: IndexFormat, options: IndexOptions) -> list[FileIndex]:
    """The index of every file in `paths` (in order), reading the trustworthy ones and building the
    rest. Files another process is indexing are left for later, so several workers describing the
    same data build different files at once; then it waits for those (bounded) and reads them."""
    found: list[FileIndex | None] = [None] * len(paths)
    pending = list(range(len(paths)))
    for blocking in (False, True):
        later = []
        for i in pending:
            found[i] = _open_one(paths[i], fmt, options, blocking)
            if found[i] is None:
                later.append(i)
        pending = later
    return [f for f in found if f is not None]


def summary(indexes: Sequence[FileIndex], options: IndexOptions, seconds: float) -> dict:
    """What run.json and the log say about the indexes of a describe."""
    built = [ix for ix in indexes if ix.status == "built"]
    rebuilt = [ix for ix in indexes if ix.status.startswith("rebuilt")]
    return {"used": True, "check": options.check, "files": len(indexes),
            "reused": len(indexes) - len(built) - len(rebuilt), "built": len(built), "rebuilt": len(rebuilt),
            "rebuilt_why": [f"{os.path.basename(ix.path)}: {ix.status[len('rebuilt: '):]}" for ix in rebuilt[:5]],
            "locations": sorted({os.path.dirname(ix.location) for ix in indexes})[:5],
            "seconds": round(seconds, 3)}


def log_summary(report: dict) -> None:
    log.info("index: %d file(s): %d reused, %d built, %d rebuilt (data.index_check=%s) in %.2f s, in %s",
             report["files"], report["reused"], report["built"], report["rebuilt"], report["check"],
             report["seconds"], ", ".join(report["locations"]) or "-")


def check_index_config(config: Any) -> None:
    """Config-only rules of the index keys (before anything is read): `data.index_dir` must be a
    directory (or not exist yet, to be made)."""
    from scaleflow.errors import ConfigError

    index_dir = config.get("index_dir") if hasattr(config, "get") else None
    if index_dir:
        path = os.path.expanduser(index_dir)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError("data.index_dir", index_dir, "a directory (or a path where one can be made)",
                              "It names a file")
