"""Sharding is an exact, balanced, reproducible partition: property tests (hypothesis).

Over pipeline counts 1..8, dataset sizes 0..5000 (empty and uneven shards included), every policy,
both levels, both uneven policies and every built-in dataset kind (tiny real files in temp dirs),
the plan must: give every record to exactly one pipeline, keep sequential/random shards within one
record (file level: one file) of each other, be identical when recomputed, hash by key (independent
of record order and of PYTHONHASHSEED), and give every pipeline the same number of steps.

Pure NumPy: nothing here imports TensorFlow. The file writers below are shared with the
integration tests (record id i is stored in feature x[0] / column `id`).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from scaleflow.data.base import DataInfo
from scaleflow.data.planning import plan_input
from scaleflow.data.sharding import (assign, even, file_keys, records_of, split_indices, stable_hash,
                                     validation_file_count)
from scaleflow.errors import ConfigError

POLICIES = ("sequential", "random", "hash")


# ------------------------------------------------------------------------------- tiny real files
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example(features: dict) -> bytes:
    """A serialized tf.train.Example: float lists, int64 lists or bytes, without TensorFlow."""
    entries = b""
    for name, value in features.items():
        if isinstance(value, bytes):
            feature = _field(1, _field(1, value))
        elif isinstance(value, (list, tuple, np.ndarray)) and np.asarray(value).dtype.kind == "f":
            feature = _field(2, _field(1, struct.pack(f"<{len(value)}f", *value)))
        else:
            ints = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
            feature = _field(3, _field(1, b"".join(_varint(int(v)) for v in ints)))
        entries += _field(1, _field(1, name.encode()) + _field(2, feature))
    return _field(1, entries)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    try:  # fast when installed; the pure-Python loop below needs no extra package
        import google_crc32c

        return google_crc32c.value(data)
    except ImportError:
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecord(path: Path, payloads) -> None:
    with open(path, "wb") as f:
        for data in payloads:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data)))


def make_tfrecords(root: Path, file_sizes, width: int = 4) -> dict:
    """Files `part-XXXXX.tfrecord`; record i (global order) has x = [i, i % 7, ...], label i % 3,
    group i % 5. Returns the data overrides."""
    root.mkdir(parents=True, exist_ok=True)
    i = 0
    for f, size in enumerate(file_sizes):
        payloads = []
        for _ in range(size):
            payloads.append(example({"x": np.array([i, i % 7] + [0.5] * (width - 2), dtype=np.float32),
                                     "label": i % 3, "group": i % 5}))
            i += 1
        write_tfrecord(root / f"part-{f:05d}.tfrecord", payloads)
    return {"name": "tfrecord", "path": str(root), "features": {"x": {"shape": [width], "dtype": "float32"}},
            "label": "label", "num_classes": 3}


def make_csv(path: Path, n: int) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["id,x1,group,label"] + [f"{i},{(i % 7) / 7:.3f},g{i % 5},{i % 3}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return {"name": "csv", "path": str(path), "label_column": "label", "feature_columns": ["id", "x1"]}


def make_parquet(root: Path, file_sizes, row_group_size: int = 64) -> dict:
    """Parquet files `part-XXXXX.parquet` of row groups of `row_group_size` rows; record i (global
    order) has id i, x1, group g{i % 5} and label i % 3, as make_csv writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    first = 0
    for f, size in enumerate(file_sizes):
        ids = np.arange(first, first + size)
        table = pa.table({"id": ids, "x1": np.round((ids % 7) / 7, 3), "group": [f"g{i % 5}" for i in ids.tolist()],
                          "label": ids % 3})
        pq.write_table(table, root / f"part-{f:05d}.parquet", row_group_size=row_group_size)
        first += size
    return {"name": "parquet", "path": str(root), "label_column": "label", "feature_columns": ["id", "x1"]}


def make_npz(path: Path, n: int) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.stack([np.arange(n), np.arange(n) % 7], axis=1).astype(np.float32)
    np.savez(path, x=x, y=np.arange(n) % 3, group=np.arange(n) % 5)
    return {"name": "npz", "path": str(path)}


def make_images(root: Path, n: int, classes: int = 3) -> dict:
    """n 2x2 PNGs; image i (global order: class dirs sorted, then files) encodes i in its pixels."""
    from PIL import Image

    per_class = [len(range(c, n, classes)) for c in range(classes)]
    i = 0
    for c, count in enumerate(per_class):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for k in range(count):
            pixel = (i % 256, i // 256, 0)
            Image.new("RGB", (2, 2), pixel).save(root / f"class{c}" / f"img{k:05d}.png")
            i += 1
    return {"name": "image_folder", "path": str(root), "image_size": [2, 2], "channels": 3}


def data_config(overrides: dict, **data):
    """The data config node as training sees it (the dataset's own schema), without Hydra."""
    from scaleflow import registry

    dataset = registry.get("dataset", overrides["name"])()
    return dataset, OmegaConf.structured(dataset.Config(**{**overrides, **data}))


# ------------------------------------------------------------------------------- the properties
def check_split(plan, split: np.ndarray, policy: str, num_pipelines: int, uneven: str) -> None:
    shards = plan.shards
    assert len(shards) == num_pipelines
    joined = np.concatenate(shards) if shards else np.zeros(0)
    assert len(joined) == len(split) and np.array_equal(np.sort(joined), np.sort(split)), "not a partition"
    need = plan.steps * plan.batch_per_pipeline
    assert all(len(r) == need for r in plan.epoch_records), "pipelines run different numbers of steps"
    for p in range(num_pipelines):
        kept = set(np.asarray(plan.epoch_records[p]).tolist())
        assert kept <= set(shards[p].tolist())
        assert kept | set(plan.dropped[p].tolist()) == set(shards[p].tolist()), "a record vanished"
        assert not kept & set(plan.dropped[p].tolist())
        if uneven == "repeat" and plan.steps:
            assert kept == set(shards[p].tolist()), "repeat lost a record"
    if plan.level == "file":
        owned = [set(r.tolist()) for r in plan.reads]
        assert sum(map(len, owned)) == len(set().union(*owned)), "two pipelines open the same file"
        for p in range(num_pipelines):
            assert np.array_equal(shards[p], records_of(plan.reads[p], plan.file_records))
        if policy in ("sequential", "random"):
            files = [len(r) for r in plan.reads]
            assert max(files) - min(files) <= 1
    elif policy in ("sequential", "random"):
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1, f"unbalanced: {sizes}"


def check_plan(plan, num_examples: int, policy: str, num_pipelines: int, uneven: str) -> None:
    train = np.concatenate(plan.train.shards)
    val = np.concatenate(plan.validation.shards) if plan.validation is not None else np.zeros(0, np.int64)
    assert not set(train.tolist()) & set(val.tolist()), "a record is in both train and validation"
    check_split(plan.train, train, policy, num_pipelines, uneven)
    if plan.validation is not None:
        check_split(plan.validation, val, policy, num_pipelines, uneven)
    report = plan.report()  # run.json's data section: JSON-ready and complete
    assert report["train"]["records"] == [len(s) for s in plan.train.shards]
    assert len(report["train"]["read_amplification"]) == num_pipelines


def file_info(file_records: list[int]) -> DataInfo:
    files = tuple(f"/data/part-{i:05d}.tfrecord" for i in range(len(file_records)))
    return DataInfo(sum(file_records), (4,), 3, "test", files=files, file_records=tuple(file_records))


class _Described:
    """A dataset stand-in for pure plan tests: only `keys` is called (hash with a shard key)."""

    def __init__(self, keys):
        self._keys = keys

    def keys(self, config, key):
        return self._keys


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 5000), num_pipelines=st.integers(1, 8), policy=st.sampled_from(POLICIES),
       uneven=st.sampled_from(("repeat", "drop")), batch=st.integers(1, 64), seed=st.integers(0, 2**31),
       files=st.integers(0, 40), split=st.sampled_from((0.0, 0.1, 0.25)), level=st.sampled_from(("auto", "record")),
       keyed=st.booleans(), data=st.data())
def test_every_plan_is_an_exact_partition_with_equal_steps(n, num_pipelines, policy, uneven, batch, seed, files,
                                                          split, level, keyed, data):
    """Sizes 0..5000, 1..8 pipelines, file-backed (uneven file sizes, empty files) or in memory."""
    if files:
        cuts = np.sort(data.draw(st.lists(st.integers(0, n), min_size=files - 1, max_size=files - 1)))
        info = file_info(np.diff(np.concatenate([[0], cuts, [n]])).astype(int).tolist())
    else:
        info = DataInfo(n, (4,), 3, "test")
    keys = np.arange(n) % 13 if keyed and policy == "hash" else None
    config = OmegaConf.create({"batch_size": batch * num_pipelines, "validation_split": split, "seed": seed,
                               "shard": policy, "shard_key": "group" if keys is not None else None,
                               "shard_level": level, "uneven": uneven, "reshuffle_each_epoch": False})
    try:
        plan = plan_input(_Described(keys), config, info, num_pipelines)
    except ConfigError as e:  # too little data for the batch: a clear error naming the key, never a crash
        assert e.key == "data.batch_size"
        event("refused: too little data for the batch")
        return
    event(f"{plan.level} level, {uneven}")
    check_plan(plan, n, policy, num_pipelines, uneven)
    again = plan_input(_Described(keys), config, info, num_pipelines)
    for a, b in zip(plan.train.epoch_records + plan.train.shards, again.train.epoch_records + again.train.shards):
        assert np.array_equal(a, b), "the plan is not reproducible"
    if keys is not None and plan.level == "record":
        owner = {}
        for p, shard in enumerate(plan.train.shards):
            for k in keys[shard].tolist():
                assert owner.setdefault(k, p) == p, "one key on two pipelines"
    if level == "auto" and keys is None:  # file level exactly when there are enough training files
        train_files = files - validation_file_count(files, split)
        expected = "file" if files and train_files >= num_pipelines else "record"
        if expected == "file" and plan.level == "record":  # a file partition left a pipeline without records
            assert "without a record" in plan.level_reason
        else:
            assert plan.level == expected


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 5000), num_pipelines=st.integers(1, 8), seed=st.integers(0, 2**31),
       epochs=st.integers(2, 4))
def test_reshuffle_each_epoch_draws_a_new_exact_partition_every_epoch(n, num_pipelines, seed, epochs):
    indices = np.arange(n)
    parts = [assign("random", indices, num_pipelines, seed, epoch=e) for e in range(epochs)]
    for shards in parts:
        assert np.array_equal(np.sort(np.concatenate(shards)), indices)
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1
    if n >= 20 and num_pipelines > 1:
        assert any(not np.array_equal(parts[0][0], parts[e][0]) for e in range(1, epochs))
    assert all(np.array_equal(a, b) for a, b in zip(parts[1], assign("random", indices, num_pipelines, seed,
                                                                      epoch=1)))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 3000), num_pipelines=st.integers(1, 8), string_keys=st.booleans(), data=st.data())
def test_hash_depends_only_on_the_key_not_on_record_order(n, num_pipelines, string_keys, data):
    keys = np.array([f"user-{i % 97}" for i in range(n)], dtype=object) if string_keys else np.arange(n) * 31 % 101
    ids = np.arange(n)
    perm = np.random.default_rng(data.draw(st.integers(0, 1000))).permutation(n)
    owner = np.empty(n, dtype=int)
    for p, part in enumerate(assign("hash", ids, num_pipelines, keys=keys)):
        owner[part] = p
    shuffled = np.empty(n, dtype=int)
    for p, part in enumerate(assign("hash", ids[perm], num_pipelines, keys=keys[perm])):
        shuffled[part] = p
    assert np.array_equal(owner, shuffled)


def test_sequential_blocks_are_contiguous_and_in_order():
    shards = assign("sequential", np.arange(10), 3)
    assert [s.tolist() for s in shards] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_uneven_report_lists_exactly_what_was_dropped_or_repeated():
    shards = [np.array([0, 1, 2, 3, 4]), np.array([5, 6])]
    repeat = even(shards, 2, "repeat")
    assert repeat.steps == 3
    assert repeat.uneven_report()["repeated_ids"] == [[0], [5, 6, 5, 6]]  # 6 = 3 steps x 2
    assert repeat.uneven_report()["dropped_per_pipeline"] == [0, 0]
    drop = even(shards, 2, "drop")
    assert drop.steps == 1
    assert drop.uneven_report()["dropped_ids"] == [[2, 3, 4], []]
    assert drop.report()["dropped"] == 3


def test_file_level_hash_keys_on_the_path_relative_to_the_data_root():
    a = file_keys(["/mnt/a/data/cat/1.png", "/mnt/a/data/dog/2.png"])
    b = file_keys(["/other/mount/cat/1.png", "/other/mount/dog/2.png"])
    assert a.tolist() == b.tolist() == ["cat/1.png", "dog/2.png"]


HASH_PROBE = """
import numpy as np
from scaleflow.data.sharding import assign, file_keys, stable_hash
keys = np.array([f"user-{i}" for i in range(500)], dtype=object)
parts = assign("hash", np.arange(500), 5, keys=keys)
files = assign("hash", np.arange(40), 3, keys=file_keys([f"/d/part-{i:05d}.tfrecord" for i in range(40)]))
ints = assign("hash", np.arange(500), 7)
row_groups = assign("hash", np.arange(40), 3, keys=file_keys([f"/d/part-{i // 4}.parquet#row_group={i % 4}"
                                                           for i in range(40)]))  # data=parquet's units
print([p.tolist() for p in parts + files + ints + row_groups], stable_hash(np.array(["a", "b"], dtype=object)).tolist())
"""


def test_hash_assignment_is_identical_across_python_hash_seeds():
    outputs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", HASH_PROBE], env=env, capture_output=True, text=True,
                                timeout=120, check=True)
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] and len(outputs[0]) > 100
    assert "tensorflow" not in outputs[0]


# ------------------------------------------------------------------- every built-in dataset kind
def _build(kind: str, root: Path, n: int, files: int) -> dict:
    if kind == "synthetic":
        return {"name": "synthetic", "num_examples": n, "num_features": 4, "num_classes": 3}
    if kind == "csv":
        return make_csv(root / "data.csv", n)
    if kind == "npz":
        return make_npz(root / "data.npz", n)
    if kind == "csv_streamed":  # data=csv read in blocks of lines (data.in_memory=false)
        return {**make_csv(root / "data.csv", n), "in_memory": False}
    if kind == "parquet":  # row groups of 64 rows are the units of file-level sharding
        return make_parquet(root / "pq", np.diff(np.linspace(0, n, files + 1).astype(int)).tolist())
    if kind == "tfrecord":
        cuts = np.linspace(0, n, files + 1).astype(int)
        sizes = np.diff(cuts).tolist()
        sizes[0] += 1 if len(sizes) > 1 and sizes[1] else 0  # uneven file sizes
        sizes[1 if len(sizes) > 1 else 0] -= 1 if len(sizes) > 1 and sizes[1] else 0
        return make_tfrecords(root / "tfr", sizes)
    return make_images(root / "images", n)


KIND_SIZES = {"synthetic": 5000, "csv": 5000, "npz": 5000, "tfrecord": 2000, "image_folder": 120,
              "csv_streamed": 5000, "parquet": 5000}


@pytest.mark.parametrize("kind", ["synthetic", "csv", "npz", "tfrecord", "image_folder", "csv_streamed", "parquet"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), num_pipelines=st.integers(1, 8), policy=st.sampled_from(POLICIES),
       uneven=st.sampled_from(("repeat", "drop")), level=st.sampled_from(("auto", "record", "file")),
       keyed=st.booleans())
def test_every_dataset_kind_is_partitioned_exactly(kind, data, num_pipelines, policy, uneven, level, keyed):
    n = data.draw(st.integers(0 if kind != "image_folder" else 3, KIND_SIZES[kind]), label="num_examples")
    files = data.draw(st.integers(1, 24), label="files")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = _build(kind, Path(tmp), n, files)
        shard_key = ("label" if kind == "synthetic" else "group") if keyed and policy == "hash" else None
        if kind == "image_folder" and shard_key:
            shard_key = "label"
        dataset, config = data_config(overrides, batch_size=2 * num_pipelines, validation_split=0.1, seed=7,
                                      shard=policy, shard_key=shard_key, shard_level=level, uneven=uneven)
        try:
            info = dataset.describe(config)
        except ConfigError:
            assume(False)  # e.g. an empty CSV: its own clear error, tested elsewhere
        assert info.num_examples == n
        try:
            plan = plan_input(dataset, config, info, num_pipelines)
        except ConfigError as e:
            # file level with too few files, or too little data for the batch: a clear, named error
            assert e.key in ("data.shard_level", "data.batch_size"), e
            if e.key == "data.shard_level":
                assert level == "file"
            event(f"refused: {e.key}")
            return
        event(f"{plan.level} level")
        check_plan(plan, n, policy, num_pipelines, uneven)
        if info.files and level == "auto" and not shard_key:
            train_files = len(np.unique(np.concatenate(plan.train.reads)))
            assert plan.level == "file" or train_files <= len(info.files)
        if plan.level == "file":
            assert plan.train.report()["read_amplification"] == [1.0] * num_pipelines or uneven == "drop" \
                or plan.train.steps == 0
        if shard_key:
            keys = np.asarray(dataset.keys(config, shard_key))
            owner = {}
            for p, shard in enumerate(plan.train.shards):
                for k in keys[shard].tolist():
                    assert owner.setdefault(k, p) == p


def test_split_indices_is_seeded_and_disjoint():
    train, val = split_indices(1000, 0.1, 3)
    assert len(val) == 100 and not set(train) & set(val)
    assert np.array_equal(val, split_indices(1000, 0.1, 3)[1])
    assert stable_hash(np.array([1, 2, 3])).dtype == np.uint64


def _config(**data):
    base = {"batch_size": 8, "validation_split": 0.1, "seed": 0, "shard": "sequential", "shard_key": None,
            "shard_level": "auto", "uneven": "repeat", "reshuffle_each_epoch": False}
    return OmegaConf.create({**base, **data})


def test_reshuffle_each_epoch_is_refused_for_policies_that_cannot_redraw():
    with pytest.raises(ConfigError) as error:
        plan_input(_Described(None), _config(shard="hash", reshuffle_each_epoch=True), DataInfo(100, (4,), 3, "t"), 2)
    assert error.value.key == "data.reshuffle_each_epoch"


def test_file_level_is_refused_with_the_reason_when_there_are_too_few_files():
    info = file_info([50, 50, 50])  # 3 files: 1 held out for validation, 2 left for 4 pipelines
    with pytest.raises(ConfigError) as error:
        plan_input(_Described(None), _config(shard_level="file"), info, 4)
    assert error.value.key == "data.shard_level" and "2 training file(s) of 3" in str(error.value)
    auto = plan_input(_Described(None), _config(), info, 4)
    assert auto.level == "record" and "2 training file(s)" in auto.level_reason


def test_file_level_validation_is_whole_files_never_read_for_training():
    info = file_info([10] * 20)
    plan = plan_input(_Described(None), _config(shard="hash", validation_split=0.2), info, 2)
    assert plan.level == "file" and plan.validation.level == "file"
    train_files = set(np.concatenate(plan.train.reads).tolist())
    val_files = set(np.concatenate(plan.validation.reads).tolist())
    assert len(val_files) == 4 and not train_files & val_files and len(train_files | val_files) == 20


@pytest.mark.parametrize("overrides,key", [
    (["data.shard=hash", "data.reshuffle_each_epoch=true"], "data.reshuffle_each_epoch"),
    (["data.shard_level=file"], "data.shard_level"),  # synthetic data has no files
    (["data=tfrecord", "data.path=.", "data.shard_level=file", "data.shard=hash", "data.shard_key=label"],
     "data.shard_level"),
])
def test_config_only_shard_rules_are_found_without_the_data(overrides, key):
    from scaleflow.cli import compose
    from scaleflow.data.rules import check_shard_config

    with pytest.raises(ConfigError) as error:
        check_shard_config(compose(overrides))
    assert error.value.key == key
    check_shard_config(compose(["data.shard=random", "data.reshuffle_each_epoch=true"]))  # fine
