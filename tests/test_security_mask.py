"""Masked columns: their raw values reach no artifact of the run or its export (issue 16, item 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import compose
from scaleflow.errors import ConfigError
from scaleflow.data.mask import Masking, Rule

N = 240
KEY_ENV = {"SF_TEST_MASK_KEY": "k3y-for-tests-only"}


def planted_csv(path: Path) -> dict[str, list[str]]:
    """A CSV whose sensitive cells are distinctive strings we can grep for afterwards."""
    rng = np.random.default_rng(0)
    cols = {"user_id": [f"uid-planted-{i:05d}" for i in range(N)],
            "name": [f"Xylophonius{i}" for i in range(N)],
            "city": [f"Zzcity{i % 3}planted" for i in range(N)],
            "age": [f"{20 + i % 50}.{123457 + i}" for i in range(N)],
            "income": [f"{50000 + 7 * i}.{4321 + i}" for i in range(N)],
            "x": [f"{v:.3f}" for v in rng.normal(size=N)],
            "label": [str(i % 2) for i in range(N)]}
    lines = [",".join(cols)] + [",".join(cols[c][i] for c in cols) for i in range(N)]
    path.write_text("\n".join(lines) + "\n")
    return cols


MASK = ["+data.mask={user_id: hash, name: drop, city: hash, age: {method: bucket, edges: [30, 50]}, "
        "income: {method: noise, scale: 1000}}", "data.mask_key_env=SF_TEST_MASK_KEY"]


def grep(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return hits


def test_rules_transform_cells_and_drop_columns():
    m = Masking([Rule("id", "hash"), Rule("age", "bucket", (18.0, 65.0)), Rule("name", "drop")], key=b"k")
    header, cells = m.apply("f.csv", ["id", "age", "name"], np.array([["a", "12", "Ann"], ["b", "70", "Bo"], ["a", "", "C"]]))
    assert header == ["id", "age"]
    assert cells[0, 0] == cells[2, 0] != cells[1, 0] and len(cells[0, 0]) == 16 and "a" != cells[0, 0]
    assert cells[:, 1].tolist() == ["0", "2", ""]  # a missing cell stays missing
    for key in (b"k", b"x" * 100):  # the fast path is exactly HMAC-SHA256 (short and long keys)
        assert Masking([], key=key)._pseudonyms(["a", "b"]) == [Masking([], key=key).pseudonym(v) for v in "ab"]
    assert Masking([Rule("id", "hash")], key=b"other").apply("f.csv", ["id"], np.array([["a"]]))[1][0, 0] != cells[0, 0]


@pytest.mark.parametrize("overrides, key", [
    (["+data.mask={nosuch: drop}"], "data.mask.nosuch"),
    (["+data.mask={user_id: hash}"], "data.mask_key_env"),
    (["+data.mask={user_id: hash}", "data.mask_key_env=SF_TEST_UNSET_VARIABLE"], "data.mask_key_env"),
    (["+data.mask={user_id: hash}", "data.mask_key_file=/nonexistent/key"], "data.mask_key_file"),
    (["+data.mask={age: shuffle}"], "data.mask.age.method"),
    (["+data.mask={age: {method: bucket, edges: [50, 30]}}"], "data.mask.age.edges"),
])
def test_bad_mask_rules_are_config_errors_naming_the_rule(tmp_path, overrides, key):
    path = tmp_path / "people.csv"
    planted_csv(path)
    with pytest.raises(ConfigError) as e:
        compose("data=csv", f"data.path={path}", "data.categorical_columns=[city]", *overrides)
    assert e.value.key == key


def test_masked_values_are_in_no_file_of_the_run_dir_shards_or_export(tmp_path, train, monkeypatch):
    for k, v in KEY_ENV.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "people.csv"
    cols = planted_csv(path)
    overrides = ["data=csv", f"data.path={path}", "data.categorical_columns=[city]", "data.shard=hash",
                 "data.shard_key=user_id", "trainer.epochs=1", "model.hidden_units=[8]", *MASK,
                 f"export.dir={tmp_path / 'run' / 'export'}", f"security.audit_log={tmp_path / 'audit.jsonl'}"]
    run = train(*overrides, run_dir=tmp_path / "run")
    from scaleflow.modes.shards import run as shards

    shards(compose(*overrides, "mode=shards", "strategy.num_workers=2"), str(tmp_path / "run"))
    assert run["status"] == "ok" and (tmp_path / "run" / "shards.json").exists()
    planted = cols["user_id"] + cols["name"] + cols["city"] + cols["age"] + cols["income"] + [KEY_ENV["SF_TEST_MASK_KEY"]]
    assert grep(tmp_path / "run", planted) == []
    assert "name" not in run["data"]["encoding"]["columns"]

    # The same run, as the audit log saw it (issue 16, item 5): who ran it, its identity, its export.
    import json

    events = {e["event"]: e for e in map(json.loads, open(tmp_path / "audit.jsonl"))}
    assert list(events)[0] == "run_start" and list(events)[-1] == "run_end" and "export_written" in events
    assert events["run_start"]["config_hash"] == run["model"]["config_hash"] and events["run_start"]["user"]
    assert events["export_written"]["checksum"] == run["export"]["checksum"]
    assert events["run_end"]["status"] == "ok" and events["run_end"]["data_fingerprint"] == run["data"]["fingerprint"]
    audit_text = (tmp_path / "audit.jsonl").read_text()
    assert not [v for v in planted if v in audit_text]  # the audit log holds no masked value either


def test_npz_features_are_masked_by_position_and_a_hashed_shard_key_is_pseudonymised(tmp_path, monkeypatch):
    from scaleflow import registry

    monkeypatch.setenv("SF_TEST_MASK_KEY", KEY_ENV["SF_TEST_MASK_KEY"])
    x = np.column_stack([np.arange(N) * 1.0, np.full(N, 42.123456), np.linspace(0, 100, N)])
    ids = np.array([f"uid-planted-{i:05d}" for i in range(N)])
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(N) % 2, ids=ids)
    cfg = compose("data=npz", f"data.path={tmp_path / 'd.npz'}", "data.shard=hash", "data.shard_key=ids",
                  "+data.mask={f0: {method: noise, scale: 5}, f1: drop, f2: {method: bucket, edges: [50]}, ids: hash}",
                  "data.mask_key_env=SF_TEST_MASK_KEY")
    dataset = registry.get("dataset", "npz")()
    masked, _ = dataset.arrays(cfg.data)
    assert masked.shape == (N, 2) and not np.allclose(masked[:, 0], x[:, 0]) and set(masked[:, 1]) == {0.0, 1.0}
    keys = dataset.keys(cfg.data, "ids")
    assert len(set(keys)) == N and not any(k.startswith("uid-planted") for k in keys)
    bad = compose("data=npz", f"data.path={tmp_path / 'd.npz'}", "+data.mask={f9: drop}")
    with pytest.raises(ConfigError) as e:
        registry.get("dataset", "npz")().arrays(bad.data)
    assert e.value.key == "data.mask.f9"


def test_tfrecord_features_are_masked_in_the_parse_step_and_a_hashed_key_is_pseudonymised(tf, tmp_path, monkeypatch):
    from scaleflow import registry

    monkeypatch.setenv("SF_TEST_MASK_KEY", KEY_ENV["SF_TEST_MASK_KEY"])
    path = tmp_path / "d.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(64):
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[20.0 + i])),
                "secret": tf.train.Feature(float_list=tf.train.FloatList(value=[4242.4242])),
                "income": tf.train.Feature(float_list=tf.train.FloatList(value=[1000.0 * i])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"uid-planted-{i}".encode()]))})).SerializeToString())
    base = ["data=tfrecord", f"data.path={path}", "++data.features={x: {shape: [1]}, secret: {shape: [1]}, income: {shape: [1]}}",
            "data.shard=hash", "data.shard_key=id", "data.mask_key_env=SF_TEST_MASK_KEY"]
    cfg = compose(*base, "+data.mask={x: {method: bucket, edges: [40, 60]}, secret: drop, "
                         "income: {method: noise, scale: 10}, id: hash}")
    dataset = registry.get("dataset", "tfrecord")()
    assert dataset.describe(cfg.data).input_shape == (2,)
    x = np.concatenate([b[0].numpy() for b in dataset.read(cfg.data).batch(64)])
    assert sorted(set(x[:, 0])) == [0.0, 1.0, 2.0] and not np.allclose(x[:, 1], 1000.0 * np.arange(64))
    assert not any(str(k).startswith("uid-planted") for k in dataset.keys(cfg.data, "id"))
    with pytest.raises(ConfigError) as e:
        compose(*base, "+data.mask={salary: drop}")
    assert e.value.key == "data.mask.salary"
