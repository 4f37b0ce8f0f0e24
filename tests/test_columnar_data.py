"""data=parquet and the streamed data=csv (data.in_memory=false): exact partitions as real pipelines read
them, the same records and encoding as the in-memory reader, bad data named before TensorFlow starts.

The readers stream (Parquet row groups, blocks of CSV lines) and skip what a pipeline does not keep,
so these tests read what each pipeline's tf.data actually yields (record id i is stored in column
`id`, the first feature, by the writers in test_sharding_properties) and compare it with the plan.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import compose
from test_sharding_properties import POLICIES, data_config, make_csv, make_parquet

from scaleflow.data.input import input_fn
from scaleflow.data.planning import plan_input
from scaleflow.errors import ConfigError, DataError
from scaleflow.testing.datasets import DatasetTestSuite

_SUITE_DATA = tempfile.TemporaryDirectory(prefix="scaleflow-parquet-suite-")
make_parquet(Path(_SUITE_DATA.name), [120, 80], row_group_size=32)


class TestParquetPassesTheDatasetSuite(DatasetTestSuite):
    """What every dataset plugin must do (registered, described without TensorFlow, reads what it
    describes, take, partition, keys)."""

    dataset = "parquet"
    overrides = (f"data.path={_SUITE_DATA.name}", "data.feature_columns=[id,x1]")
    shard_key = "group"


def _source(kind: str, root: Path, n: int, files: int) -> dict:
    if kind == "parquet":
        return make_parquet(root / "pq", np.diff(np.linspace(0, n, files + 1).astype(int)).tolist(), row_group_size=16)
    return {**make_csv(root / "data.csv", n), "in_memory": False}


def _epoch_ids(tf, dataset, config, split, num_pipelines: int, training: bool, initial_epoch: int = 0,
               epochs: int = 2) -> list[list[list[int]]]:
    """ids[epoch][pipeline]: what each pipeline's input_fn yields, as worker p of num_pipelines builds it."""
    fn = input_fn(dataset, config, split, training=training, seed=config.seed, initial_epoch=initial_epoch)
    iterators = [iter(fn(tf.distribute.InputContext(num_pipelines, p, num_pipelines))) for p in range(num_pipelines)]
    out = []
    for _ in range(epochs):
        seen = []
        for it in iterators:
            ids: list[int] = []
            for _ in range(split.steps):
                ids += np.round(next(it)[0].numpy()[:, 0]).astype(int).tolist()
            seen.append(ids)
        out.append(seen)
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(("parquet", "csv_streamed")), n=st.integers(30, 400), files=st.integers(1, 5),
       num_pipelines=st.integers(1, 3), policy=st.sampled_from(POLICIES), level=st.sampled_from(("auto", "record")),
       uneven=st.sampled_from(("repeat", "drop")), keyed=st.booleans(), reshuffle=st.booleans())
def test_each_pipeline_reads_exactly_its_planned_records(tf, kind, n, files, num_pipelines, policy, level, uneven,
                                                         keyed, reshuffle):
    reshuffle = reshuffle and policy == "random"
    with tempfile.TemporaryDirectory() as tmp:
        dataset, config = data_config(_source(kind, Path(tmp), n, files), batch_size=2 * num_pipelines,
                                      validation_split=0.1, seed=5, shuffle_buffer=16, shard=policy, uneven=uneven,
                                      shard_key="group" if keyed and policy == "hash" else None, shard_level=level,
                                      reshuffle_each_epoch=reshuffle, cache=False)
        try:
            plan = plan_input(dataset, config, dataset.describe(config), num_pipelines, log_summary=False)
        except ConfigError as e:
            assert e.key == "data.batch_size"
            assume(False)
        for split, training in ((plan.train, True), (plan.validation, False)):
            if split is None or not split.steps:
                continue
            seen = _epoch_ids(tf, dataset, config, split, num_pipelines, training)
            for epoch, per_pipeline in enumerate(seen):
                expected = split.for_epoch(epoch)
                for p, ids in enumerate(per_pipeline):
                    assert sorted(ids) == sorted(expected.epoch_records[p].tolist()), \
                        f"{kind} {split.level} level, epoch {epoch}, pipeline {p}: other records than planned"
            if training:  # resume: a pipeline built to start at epoch 1 reads what epoch 1 read
                resumed = _epoch_ids(tf, dataset, config, split, num_pipelines, training, initial_epoch=1, epochs=1)
                assert [sorted(ids) for ids in resumed[0]] == [sorted(ids) for ids in seen[1]]


def test_parquet_row_groups_are_the_file_level_units_and_a_pipeline_opens_only_its_own(tf, tmp_path):
    dataset, config = data_config(make_parquet(tmp_path / "pq", [100, 60, 40], row_group_size=20), batch_size=4,
                                  validation_split=0.2, seed=1, shard="hash", shuffle_buffer=0)
    info = dataset.describe(config)
    assert len(info.files) == 10 and info.files[0].endswith("part-00000.parquet#row_group=0")
    assert sum(info.file_records) == 200 and info.extra["reader"]["columns_read_to_describe"] == []  # footers only
    plan = plan_input(dataset, config, info, 2, log_summary=False)
    assert plan.level == "file" and plan.train.report()["read_amplification"] == [1.0, 1.0]
    assert len(np.concatenate(plan.validation.reads)) == 2  # 2 whole row groups held out
    opened = []
    original = dataset._stream

    def spy(cfg, files, keep):
        opened.append(list(files) if files is not None else None)
        return original(cfg, files, keep)

    dataset._stream = spy
    ids = _epoch_ids(tf, dataset, config, plan.train, 2, training=False, epochs=1)[0]
    assert sorted(ids[0] + ids[1]) == sorted(np.concatenate(plan.train.epoch_records).tolist())
    assert sorted(opened[0] + opened[1]) == sorted(info.files[f] for f in np.concatenate(plan.train.reads))


def test_streamed_csv_gives_the_in_memory_records_encoding_and_classes(tf, tmp_path):
    path = tmp_path / "mixed.csv"
    rng = np.random.default_rng(0)
    lines = ["id,x1,x2,color,label"]
    for i in range(300):
        c = int(rng.integers(0, 3))
        x2 = "" if i % 17 == 0 else ("NA" if i % 29 == 0 else f"{rng.normal():.3f}")
        lines.append(f"r{i}, {rng.normal() + 2 * c:.3f},{x2},{['red', 'green', 'blue'][c]} ,{['cat', 'dog', 'eel'][c]}")
    path.write_text("\n".join(lines) + "\n")
    overrides = ("data=csv", f"data.path={path}", "data.shard_key=id", "data.categorical_columns=[color]",
                 "data.missing=mean", "data.shard=hash")
    from scaleflow.data.csv import CSV

    results = {}
    for in_memory in ("true", "false"):
        cfg = compose(*overrides, f"data.in_memory={in_memory}")
        dataset = CSV()
        info = dataset.describe(cfg.data)
        plan = plan_input(dataset, cfg.data, info, 2, log_summary=False)
        records = list(dataset.read(cfg.data).as_numpy_iterator())
        results[in_memory] = (info, plan, records, dataset.in_memory)
    (mem, mem_plan, mem_records, was_in_memory), (streamed, streamed_plan, streamed_records, streamed_in_memory) = \
        results["true"], results["false"]
    assert was_in_memory and not streamed_in_memory
    assert streamed.extra["reader"]["mode"] == "streaming" and mem.extra["reader"]["mode"] == "in_memory"
    assert streamed.extra["encoding"] == mem.extra["encoding"]  # vocabulary, means, classes
    assert streamed.class_names == mem.class_names == ("cat", "dog", "eel")
    assert streamed.extra["report"]["imputed"] == mem.extra["report"]["imputed"] == {"x2": 28}
    for a, b in zip(streamed_plan.train.shards + streamed_plan.validation.shards,
                    mem_plan.train.shards + mem_plan.validation.shards):
        assert np.array_equal(a, b)  # the same partition whichever reader runs
    assert len(streamed_records) == len(mem_records) == 300
    for (xs, ys), (xm, ym) in zip(streamed_records, mem_records):
        np.testing.assert_allclose(xs, xm, rtol=1e-6)
        assert int(ys) == int(ym)


@pytest.mark.parametrize("text, overrides, where, problem", [
    ("a,b,label\n1,2,0\n3,4\n", [], "line 3", "2 field(s) where the header has 3 columns"),
    ("a,b,label\n", [], "line 1", "the header has no records under it"),
    ("a,b,label\n1,2,0\n3,,1\n", [], "line 3 (record 1), column 'b'", "missing value"),
    ("a,b,label\n1,2,0\n3,-inf,1\n", ["data.missing=mean"], "line 3 (record 1), column 'b'", "'-inf' is not a finite number"),
    ("a,b,label\n1,2,0\n3,4,\n", [], "line 3 (record 1), column 'label'", "no label"),
    ("a,b,label\n1,x,0\n3,4,1\n5,6,1\n", [], "line 2, column 'b'", "'x' is not a number. List it in data.categorical_columns"),
])
def test_bad_streamed_csv_is_a_data_error_before_tensorflow(tmp_path, text, overrides, where, problem):
    """The in-memory reader's cases (test_csv_data.py), named by file, line and column when streamed."""
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        compose("data=csv", f"data.path={path}", "data.in_memory=false", *overrides)
    assert str(e.value).startswith(f"{path} {where}: {problem}"), str(e.value)


def test_bad_parquet_is_named_before_tensorflow(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "pq"
    root.mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0, None, 4.0], "name": ["x", "y", "z", "w"], "label": [0, 1, 0, 1]}),
                   root / "part-0.parquet", row_group_size=2)
    with pytest.raises(DataError) as e:
        compose("data=parquet", f"data.path={root}")
    assert "column 'name'" in str(e.value) and "List it in data.categorical_columns" in str(e.value)
    with pytest.raises(DataError) as e:
        compose("data=parquet", f"data.path={root}", "data.ignore_columns=[name]")
    assert "row group 1, row 0 (record 2)" in str(e.value) and "column 'a'" in str(e.value)
    cfg = compose("data=parquet", f"data.path={root}", "data.ignore_columns=[name]", "data.missing=mean")
    from scaleflow.data.parquet import Parquet

    info = Parquet().describe(cfg.data)
    fitted = Parquet._fit_records(cfg.data, info.file_records)  # training records at either shard level
    assert not fitted.all()
    assert info.extra["encoding"]["fill"]["a"] == pytest.approx(np.nanmean(np.array([1.0, 2.0, np.nan, 4.0])[fitted]))
    (root / "part-1.parquet").write_text("not parquet")
    with pytest.raises(DataError) as e:
        compose("data=parquet", f"data.path={root}", "data.ignore_columns=[name]")
    assert "part-1.parquet: not a readable Parquet file" in str(e.value)


@pytest.mark.parametrize("overrides, key", [
    (["data.in_memory=maybe"], "data.in_memory"),
    (["data.in_memory=false", "+data.mask={x1: drop}"], "data.in_memory"),
    (["data.in_memory_max_mb=-1"], "data.in_memory_max_mb"),
])
def test_new_csv_keys_are_validated_naming_key_and_allowed_values(tmp_path, overrides, key):
    path = tmp_path / "d.csv"
    make_csv(path, 20)
    with pytest.raises(ConfigError) as e:
        compose("data=csv", f"data.path={path}", "data.feature_columns=[id,x1]", *overrides)
    assert e.value.key == key


def test_trains_on_parquet_and_on_a_streamed_csv_and_run_json_names_the_reader(train, tmp_path):
    make_parquet(tmp_path / "pq", [150, 150], row_group_size=50)
    run = train("data=parquet", f"data.path={tmp_path / 'pq'}", "data.feature_columns=[id,x1]",
                "data.categorical_columns=[group]", "data.shard=hash", "trainer.epochs=1", "model.hidden_units=[8]",
                run_dir=tmp_path / "pq_run")
    assert run["status"] == "ok" and run["data"]["shard_level"] == "file"
    assert run["data"]["reader"]["name"] == "parquet" and run["data"]["class_names"] == ["0", "1", "2"]
    assert run["export"]["verified"]
    import json

    metadata = json.loads((Path(run["export"]["path"]) / "scaleflow_export.json").read_text())["metadata"]
    assert metadata["class_names"] == ["0", "1", "2"] and metadata["feature_stats"]["count"] > 0  # drift stats
    assert metadata["feature_names"] == ["id", "x1", "group=g0", "group=g1", "group=g2", "group=g3", "group=g4"]
    make_csv(tmp_path / "d.csv", 300)
    run = train("data=csv", f"data.path={tmp_path / 'd.csv'}", "data.feature_columns=[id,x1]",
                "data.in_memory_max_mb=0.001", "trainer.epochs=1", "model.hidden_units=[8]", run_dir=tmp_path / "csv_run")
    assert run["status"] == "ok" and run["data"]["reader"]["mode"] == "streaming"
    assert "data.in_memory_max_mb=0.001" in run["data"]["reader"]["why"]


def test_streamed_csv_is_described_from_its_index_and_a_worker_parses_only_its_blocks(tf, tmp_path, monkeypatch):
    from scaleflow.data import csv_stream
    from scaleflow.data.csv import CSV

    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", 2048)
    path = tmp_path / "d.csv"
    make_csv(path, 3000)
    overrides = ("data=csv", f"data.path={path}", "data.feature_columns=[id,x1]", "data.in_memory=false",
                 "data.validation_split=0", "data.batch_size=8")
    from scaleflow.modes.index import run as index_run

    report = index_run(compose(*overrides, "mode=index"), str(tmp_path / "index_run"))  # ahead of time
    assert report["built"] == 1 and report["records"] == 3000 and (tmp_path / ".d.csv.sfindex").exists()
    cfg = compose(*overrides)
    csv_stream.StreamingCSV._described.clear()  # as a new process (another worker, the next run) sees it
    dataset = CSV()
    info = dataset.describe(cfg.data)
    assert info.extra["index"]["reused"] == 1 and info.num_examples == 3000
    assert info.extra["reader"]["blocks"] > 10
    parsed = []
    original = csv_stream.StreamingCSV._parse

    def spy(self, config, lay, block, *args, **kwargs):
        parsed.append(block)
        return original(self, config, lay, block, *args, **kwargs)

    monkeypatch.setattr(csv_stream.StreamingCSV, "_parse", spy)
    plan = plan_input(dataset, cfg.data, info, 2, log_summary=False)  # sequential: two halves of the file
    ids = _epoch_ids(tf, dataset, cfg.data, plan.train, 2, training=False, epochs=1)[0]
    assert sorted(ids[0]) == list(range(1500)) and sorted(ids[1]) == list(range(1500, 3000))
    blocks = info.extra["reader"]["blocks"]
    assert len(parsed) <= blocks + 2  # each block parsed by one pipeline (one more where the halves meet)
    path.write_text(path.read_text() + "3000,0.5,g0,1\n")  # changed: the stale index is rebuilt
    csv_stream.StreamingCSV._described.clear()
    info = CSV().describe(compose(*overrides).data)
    assert info.num_examples == 3001


def test_a_nan_the_footers_cannot_show_is_named_when_the_read_meets_it(tf, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.arange(400, dtype=np.float64)
    x[333] = np.nan
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"x": x, "label": np.arange(400) % 2}), tmp_path / "pq" / "p.parquet", row_group_size=100)
    cfg = compose("data=parquet", f"data.path={tmp_path / 'pq'}")  # footers: no null, so no error yet
    from scaleflow.data.parquet import Parquet

    dataset = Parquet()
    with pytest.raises(Exception) as e:
        list(dataset.read(cfg.data).as_numpy_iterator())
    explained = dataset.explain_read_error(cfg.data, e.value)
    assert str(explained).startswith(f"{tmp_path / 'pq' / 'p.parquet'} row group 3, row 33 (record 333), column 'x': "
                                     "missing value")
