"""Per-file indexes: describing costs O(files) once indexed, an index is trusted only while its file is
unchanged, it is built once however many processes describe at once, and record-level shards read by
offset exactly the records a plain scan would keep.

Pure NumPy except where a test takes the `tf` fixture (the seek reader). File writers are shared with
the sharding property tests (record id i is stored in feature x[0], label i % 3, group i % 5).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sharding_integration import NO_TF_WRAPPER
from test_sharding_properties import data_config, example, make_tfrecords, write_tfrecord

from scaleflow.data import index as index_module
from scaleflow.data.index import IndexOptions, open_indexes, read_index, write_index
from scaleflow.data.planning import plan_input
from scaleflow.data.tfrecord_index import HEADER, byte_ranges
from scaleflow.errors import ConfigError, DataError

SIZES = [50, 30, 0, 70, 20]  # an empty file too


def _source(tmp_path: Path, sizes=SIZES, **data):
    """The TFRecord dataset of tmp_path/tfr (written on first use) and its data config."""
    if not (tmp_path / "tfr").exists():
        make_tfrecords(tmp_path / "tfr", sizes)
    overrides = {"name": "tfrecord", "path": str(tmp_path / "tfr"), "label": "label", "num_classes": 3,
                 "features": {"x": {"shape": [4], "dtype": "float32"}}}
    return data_config(overrides, **{"batch_size": 8, "validation_split": 0.1, "seed": 3, "shuffle_buffer": 0,
                                      "cache": False, **data})


def _index_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tfr").glob(".*.sfindex"))


def test_a_second_describe_reuses_the_indexes_and_agrees_with_a_full_scan(tmp_path):
    dataset, config = _source(tmp_path, shard="hash", shard_key="group")
    first = dataset.describe(config)
    assert first.extra["index"]["built"] == len(SIZES) and len(_index_files(tmp_path)) == len(SIZES)
    again, _ = _source(tmp_path, shard="hash", shard_key="group")  # a new process would do the same
    second = again.describe(config)
    assert second.extra["index"]["reused"] == len(SIZES) and second.extra["index"]["built"] == 0
    scan, scan_config = _source(tmp_path, shard="hash", shard_key="group", index="off")
    plain = scan.describe(scan_config)
    assert plain.extra["index"] == {"used": False, "why": "data.index=off", "seek": False}
    for field in ("num_examples", "file_records", "num_classes", "class_names", "files", "fingerprint"):
        assert getattr(second, field) == getattr(plain, field), field
    assert second.extra["index"]["label_histogram"] == {"0": 57, "1": 57, "2": 56}
    assert again.keys(config, "group").tolist() == scan.keys(scan_config, "group").tolist()
    assert second.extra["index"]["seek"] is True


def _rewrite_index(location: Path, **changes) -> None:
    meta, arrays = read_index(str(location))
    for name, value in changes.items():
        arrays[name] = value
    write_index(str(location), meta, arrays)


CORRUPTIONS = {
    "garbage bytes": lambda ix, other: ix.write_bytes(b"not an index at all"),
    "truncated": lambda ix, other: ix.write_bytes(ix.read_bytes()[: len(ix.read_bytes()) // 2]),
    "another file's index": lambda ix, other: shutil.copy(other, ix),
    "shifted offsets": lambda ix, other: _rewrite_index(ix, offsets=read_index(str(ix))[1]["offsets"] + 1),
    "wrong lengths": lambda ix, other: _rewrite_index(ix, lengths=read_index(str(ix))[1]["lengths"] * 0),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_or_foreign_index_is_rebuilt_with_a_warning_never_trusted(tmp_path, caplog, corruption):
    dataset, config = _source(tmp_path)
    expected = dataset.describe(config).file_records
    first, other = _index_files(tmp_path)[0], _index_files(tmp_path)[1]
    CORRUPTIONS[corruption](first, other)
    fresh, _ = _source(tmp_path)
    with caplog.at_level(logging.WARNING, logger="scaleflow"):
        info = fresh.describe(config)
    assert info.file_records == expected
    assert info.extra["index"]["rebuilt"] == 1 and info.extra["index"]["reused"] == len(SIZES) - 1
    assert "corrupt index" in caplog.text or "has file=" in info.extra["index"]["rebuilt_why"][0]


def test_a_changed_data_file_is_reindexed(tmp_path):
    dataset, config = _source(tmp_path)
    dataset.describe(config)
    make_tfrecords(tmp_path / "tfr", [50, 31, 0, 70, 20])  # part-00001 gains a record (and shifts ids)
    fresh, _ = _source(tmp_path)
    info = fresh.describe(config)
    assert info.file_records == (50, 31, 0, 70, 20)
    assert info.extra["index"]["rebuilt"] >= 1
    assert any("size changed" in why for why in info.extra["index"]["rebuilt_why"])


def _same_size_rewrite(path: Path, records: int) -> None:
    """Other labels, the same size and the same mtime (e.g. a copy made with `rsync -t`)."""
    st = path.stat()
    write_tfrecord(path, [example({"x": np.array([i, i % 7, 0.5, 0.5], dtype=np.float32), "label": (i + 1) % 3,
                                   "group": i % 5}) for i in range(records)])
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_index_check_checksum_catches_a_rewrite_that_keeps_size_and_mtime(tmp_path):
    dataset, config = _source(tmp_path, index_check="checksum")
    dataset.describe(config)
    _same_size_rewrite(tmp_path / "tfr" / "part-00000.tfrecord", SIZES[0])
    by_stat, stat_config = _source(tmp_path)  # stat: the documented blind spot, reused
    assert by_stat.describe(stat_config).extra["index"]["reused"] == len(SIZES)
    by_checksum, _ = _source(tmp_path, index_check="checksum")
    report = by_checksum.describe(config).extra["index"]
    assert report["rebuilt"] == 1 and "SHA-256 changed" in report["rebuilt_why"][0]
    assert report["label_histogram"] != by_stat.describe(stat_config).extra["index"]["label_histogram"]


@dataclass(frozen=True)
class _Counting:
    """A format that records every build and takes its time (so builders overlap)."""

    log: str
    kind = "counting"
    version = 1
    grow: bool = False

    def build(self, path):
        with open(self.log, "a") as f:
            f.write(os.path.basename(path) + "\n")
        time.sleep(0.05)
        if self.grow:  # someone appends to the file while it is indexed
            with open(path, "ab") as f:
                f.write(b"more")
        return {"size": np.array([os.path.getsize(path)])}, {"records": 1}

    def satisfies(self, meta):
        return None

    def merged(self, meta):
        return self

    def check(self, path, index):
        return None


def test_concurrent_describes_build_each_index_exactly_once(tmp_path):
    """flock conflicts between separate open() calls even in one process, so threads stand in for the
    workers of a run (open_indexes is what each worker's describe calls)."""
    files = []
    for i in range(6):
        files.append(str(tmp_path / f"f{i}.bin"))
        Path(files[-1]).write_bytes(b"x" * (i + 1))
    fmt = _Counting(str(tmp_path / "builds.log"))
    barrier = threading.Barrier(4)

    def worker(_):
        barrier.wait()
        return [ix.meta["records"] for ix in open_indexes(files, fmt, IndexOptions())]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4)))
    builds = Path(fmt.log).read_text().split()
    assert sorted(builds) == sorted(os.path.basename(f) for f in files), "a file was indexed twice (or never)"
    assert results == [[1] * 6] * 4
    assert not list(tmp_path.glob(".tmp-*")), "a temporary index was left behind"


def test_a_file_changed_while_indexed_is_an_error_naming_it(tmp_path):
    path = tmp_path / "growing.bin"
    path.write_bytes(b"data")
    with pytest.raises(DataError, match=r"growing\.bin: changed while it was being indexed"):
        open_indexes([str(path)], _Counting(str(tmp_path / "log"), grow=True), IndexOptions())
    assert not list(tmp_path.glob(".*.sfindex")), "a half-true index was kept"


def test_indexes_of_a_read_only_data_dir_go_to_index_dir_or_the_user_cache(tmp_path, monkeypatch):
    data_dir = str(tmp_path / "tfr")
    writable = index_module._writable
    monkeypatch.setattr(index_module, "_writable", lambda d: d != data_dir and writable(d))  # tests run as root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataset, config = _source(tmp_path)
    info = dataset.describe(config)
    assert not _index_files(tmp_path)
    assert info.extra["index"]["locations"] == [str(tmp_path / "cache" / "scaleflow" / "index")]
    chosen, chosen_config = _source(tmp_path, index_dir=str(tmp_path / "idx"))
    assert chosen.describe(chosen_config).extra["index"]["locations"] == [str(tmp_path / "idx")]
    assert len(list((tmp_path / "idx").glob("*-part-0000?.tfrecord.sfindex"))) == len(SIZES)
    again, _ = _source(tmp_path)
    assert again.describe(config).extra["index"]["reused"] == len(SIZES)


def test_gzip_files_are_described_from_their_index_but_read_by_scan(tmp_path):
    dataset, config = _source(tmp_path)
    for path in sorted((tmp_path / "tfr").glob("part-*")):
        raw = path.read_bytes()
        with gzip.open(path, "wb") as f:
            f.write(raw)
    dataset, config = _source(tmp_path, compression="GZIP", shard="hash", shard_key="group")
    info = dataset.describe(config)
    report = info.extra["index"]
    assert info.num_examples == sum(SIZES) and report["used"] and report["seek"] is False
    assert "GZIP" in report["seek_why"] and "cannot be entered at an offset" in report["seek_why"]
    plan = plan_input(dataset, config, info, 2)
    assert plan.train.report()["read"] == "scan" and plan.train.report()["read_amplification"][0] > 1.0


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), min_size=1, max_size=60), data=st.data(),
       max_gap=st.sampled_from([0, 1, 40, 1 << 16]), max_records=st.integers(1, 8),
       max_bytes=st.sampled_from([1, 100, 1 << 20]))
def test_byte_ranges_fetch_exactly_the_kept_payloads_in_order(lengths, data, max_gap, max_records, max_bytes):
    lengths = np.array(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths + 16)[:-1]]).astype(np.int64)
    payloads = [bytes([i % 251]) * int(n) for i, n in enumerate(lengths)]
    stream = b"".join(b"H" * HEADER + p + b"FOOT" for p in payloads)
    kept = np.array(sorted(data.draw(st.sets(st.integers(0, len(lengths) - 1)))), dtype=np.int64)
    chunks = byte_ranges(offsets, lengths, kept, max_gap=max_gap, max_records=max_records, max_bytes=max_bytes)
    got = []
    for chunk in chunks:
        assert len(chunk.positions) <= max_records
        blob = b"".join(stream[a:a + s] for a, s in zip(chunk.starts.tolist(), chunk.sizes.tolist()))
        got += [blob[p:p + n] for p, n in zip(chunk.positions.tolist(), chunk.lengths.tolist())]
    assert got == [payloads[i] for i in kept]
    read = sum(c.bytes for c in chunks)
    if max_gap == 0:  # each kept payload and its 4-byte checksum, nothing else
        assert read == int(lengths[kept].sum()) + 4 * len(kept), "max_gap=0 must read exactly the kept records"
    for chunk in chunks:  # the checksum follows each payload in what was read
        blob = b"".join(stream[a:a + s] for a, s in zip(chunk.starts.tolist(), chunk.sizes.tolist()))
        assert all(blob[p + n:p + n + 4] == b"FOOT" for p, n in zip(chunk.positions.tolist(), chunk.lengths.tolist()))


def test_index_keys_are_checked_before_tensorflow(tmp_path):
    from scaleflow.cli import compose
    from scaleflow.validation import validate

    base = ["data=tfrecord", f"data.path={tmp_path}"]
    for override, key in (("data.index=sometimes", "data.index"), ("data.index_check=mtime", "data.index_check"),
                          ("data.index_workers=-1", "data.index_workers")):
        with pytest.raises(ConfigError) as error:
            validate(compose(base + [override]))
        assert error.value.key == key
        assert "auto" in str(error.value) or "stat" in str(error.value) or ">= 0" in str(error.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError) as error:
        validate(compose(base + [f"data.index_dir={tmp_path / 'afile'}"]))
    assert error.value.key == "data.index_dir"


def _ids(batch) -> list[int]:
    return np.round(batch[0].numpy()[:, 0]).astype(int).tolist()


@pytest.mark.parametrize("data", [dict(shard="hash"), dict(shard="sequential", uneven="drop"), dict(shard="random")],
                         ids=["hash", "sequential-drop", "random"])
def test_seek_reads_the_same_records_in_the_same_order_as_a_scan(tf, tmp_path, data):
    from scaleflow.data.input import input_fn

    sizes = [300, 0, 250, 400, 50]
    per_pipeline = []
    for index in ("auto", "off"):
        dataset, config = _source(tmp_path, sizes, shard_level="record", index=index, batch_size=9, **data)
        plan = plan_input(dataset, config, dataset.describe(config), 3)
        assert plan.train.report()["read"] == ("seek" if index == "auto" else "scan")
        fn = input_fn(dataset, config, plan.train, training=True, seed=3)
        pipelines = []
        for p in range(3):
            batches = iter(fn(tf.distribute.InputContext(3, p, 3)))
            seen = sum((_ids(next(batches)) for _ in range(2 * plan.train.steps)), [])  # two epochs
            assert sorted(seen[:len(seen) // 2]) == sorted(plan.train.epoch_records[p].tolist())
            pipelines.append(seen)
        per_pipeline.append(pipelines)
    assert per_pipeline[0] == per_pipeline[1]
    if index == "off":
        assert plan.train.report()["read_amplification"][0] > 1.0
    resumed = input_fn(dataset, config, plan.train, training=True, seed=3, initial_epoch=1)
    batches = iter(resumed(tf.distribute.InputContext(3, 1, 3)))
    assert sorted(sum((_ids(next(batches)) for _ in range(plan.train.steps)), [])) == \
        sorted(plan.train.epoch_records[1].tolist())


@pytest.mark.slow
def test_mode_index_builds_in_parallel_without_tensorflow_then_mode_shards_reuses(tmp_path):
    import subprocess
    import sys

    overrides = make_tfrecords(tmp_path / "tfr", [200] * 5)
    args = ["data=tfrecord", f"data.path={overrides['path']}", "data.features={x: {shape: [4], dtype: float32}}",
            "data.shard_key=group", "data.index_workers=2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(mode, *extra):
        return subprocess.run([sys.executable, "-c", NO_TF_WRAPPER, f"mode={mode}", *args, *extra,
                               f"hydra.run.dir={tmp_path / mode}"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    built = run("index")
    assert built.returncode == 0, built.stderr
    assert "TENSORFLOW_IMPORTED=False" in built.stdout and "5 built" in built.stdout
    report = json.loads((tmp_path / "index" / "index.json").read_text())
    assert report["records"] == 1000 and report["workers"] == 2
    shards = run("shards", "data.shard=hash", "strategy.num_workers=2", "strategy=multi_worker")
    assert shards.returncode == 0, shards.stderr
    assert "TENSORFLOW_IMPORTED=False" in shards.stdout
    assert json.loads((tmp_path / "shards" / "shards.json").read_text())["index"]["reused"] == 5
    again = run("index")
    assert "5 already current" in again.stdout
    bad = run("index", "data.index=off")
    assert bad.returncode == 2 and "data.index" in bad.stderr + bad.stdout


def test_a_record_read_by_offset_is_checked_like_tensorflow_checks_it(tf, tmp_path):
    """TensorFlow's reader checks every payload's checksum; reading by offset must too, or a flipped
    bit in a float would train silently."""
    dataset, config = _source(tmp_path)
    dataset.describe(config)
    x, _ = next(iter(dataset.take(config, np.array([3, 60])).batch(2)))
    assert np.round(x.numpy()[:, 0]).tolist() == [3, 60]
    part = tmp_path / "tfr" / "part-00000.tfrecord"
    offsets = read_index(str(_index_files(tmp_path)[0]))[1]["offsets"]
    data = bytearray(part.read_bytes())
    data[int(offsets[3]) + HEADER + 20] ^= 0x01  # a float of record 3: it still parses, the framing holds
    part.write_bytes(bytes(data))
    fresh, _ = _source(tmp_path)
    fresh.describe(config)  # re-indexed (mtime changed); the framing is fine, the payload is not
    with pytest.raises(tf.errors.OpError, match=r"part-00000\.tfrecord: record 3: corrupt record \(payload checksum"):
        list(fresh.take(config, np.array([1, 3, 4])))


def test_data_cache_holds_a_pipeline_in_memory_only_within_cache_max_mb(tmp_path):
    """So a run's memory does not grow with the data: a split larger than data.cache_max_mb (records
    x float32 features + label, per pipeline) is read from the files every epoch, and run.json says so."""
    dataset, config = _source(tmp_path, cache=True)  # 170 records x (4 floats + label) = 4 KB per split
    plan = plan_input(dataset, config, dataset.describe(config), 1)
    assert plan.train.report()["cache"] == {"cached": True, "mb_per_pipeline": 0.0}
    small, small_config = _source(tmp_path, cache=True, cache_max_mb=1)
    small_config.cache_max_mb = None  # no limit
    assert plan_input(small, small_config, small.describe(small_config), 1).train.cache is True
    tiny = dataset.describe(config)
    from dataclasses import replace

    huge = replace(tiny, input_shape=(100_000,))  # 400 KB per record: 170 records exceed 1 MB
    small_config.cache_max_mb = 1
    report = plan_input(small, small_config, huge, 1).report()
    assert report["train"]["cache"]["cached"] is False and report["train"]["cache"]["mb_per_pipeline"] > 1
    off, off_config = _source(tmp_path, cache=False)
    assert plan_input(off, off_config, off.describe(off_config), 1).train.report()["cache"]["cached"] is False


def test_the_vectorized_feature_reader_agrees_with_the_one_record_parser(tmp_path, monkeypatch):
    """Indexing reads the label/key of every record at once in NumPy; on every layout it must give
    what the record-by-record protobuf parser gives (or leave the record to it)."""
    import mmap

    from scaleflow.data.tfrecord_index import first_values, first_values_vectorized, frame

    shapes = [lambda i: i % 3, lambda i: [-5, 7], lambda i: np.array([2.5], dtype=np.float32), lambda i: b"cat",
              lambda i: b"", None, lambda i: 2**40 + i, lambda i: [], lambda i: np.array([], dtype=np.float32)]
    payloads = []
    for i in range(900):
        features = {"x": np.array([i, 1.5], dtype=np.float32)}
        if shapes[i % 9] is not None:
            features["label"] = shapes[i % 9](i)
        features["group"] = f"user-{i % 7}".encode() if i % 2 else i % 5
        payloads.append(example(features))
    payloads.append(b"\x12\x00" + example({"label": 1}))  # another field first: read one by one
    path = tmp_path / "mixed.tfrecord"
    write_tfrecord(path, payloads)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        offsets, lengths = frame(str(path), buffer, len(buffer))
        fast, slow = first_values_vectorized(buffer, offsets + HEADER, lengths, ["label", "group"])
        assert slow.tolist() == [900]
        for i in range(900):
            expected = first_values(buffer[offsets[i] + HEADER:offsets[i] + HEADER + lengths[i]], {b"label": 0, b"group": 1})
            got = [fast["label"][i], fast["group"][i]]
            assert got == expected and [type(v) for v in got] == [type(v) for v in expected], i
    from scaleflow.data import tfrecord_index

    monkeypatch.setattr(tfrecord_index, "BLOCK", 64)  # blocks of records, the one-by-one records among them
    arrays, meta = tfrecord_index.TFRecordIndex("", ("label", "group")).build(str(path))
    group = tfrecord_index.unpack_column(meta["column_kinds"]["group"], {
        part: arrays[f"column1_{part}"] for part in ("values", "ends", "present") if f"column1_{part}" in arrays})
    assert meta["column_kinds"]["group"] == "mixed" and group is None
    label_present = arrays["column0_present"]
    assert label_present.tolist() == [shapes[i % 9] is not None and i % 9 not in (7, 8) for i in range(900)] + [True]
    dataset, config = data_config({"name": "tfrecord", "path": str(path), "features": {"x": {"shape": [2]}},
                                   "num_classes": 3}, shard="hash", shard_key="group")
    [ix] = dataset._indexes(config, [str(path)])
    assert ix.meta["column_kinds"] == {"label": "mixed", "group": "mixed"} and ix.meta["records"] == 901
