"""Training reads what the shard plan says: record ids as the real input pipelines yield them.

Each dataset stores record id i in its first feature (see the writers in test_sharding_properties),
so a batch tells which records a pipeline read. The ids are collected from `input_fn` driven through
a real tf.distribute.MirroredStrategy with two input pipelines (one per replica, the PER_REPLICA
input mode: the same `distribute_datasets_from_function` path every TF strategy feeds from), and
from `input_fn` called directly with `tf.distribute.InputContext(2, i, 2)` for pipelines 0 and 1, as
each of two workers of a multi-worker run calls it, and from a real 2-worker
`strategy=multi_worker` training run (two processes, MultiWorkerMirroredStrategy): a sitecustomize
tap records the ids each worker's training iterator yielded, checked against the plan per epoch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from test_sharding_properties import data_config, make_csv, make_images, make_npz, make_tfrecords

from scaleflow.data.input import input_fn
from scaleflow.data.planning import plan_input

EPOCHS = 3


def _ids(x) -> list[int]:
    """Record ids from a batch of features: x[..., 0] (images: R + 256 G of pixel (0, 0))."""
    x = x.numpy()
    if x.ndim == 4:
        return np.round(x[:, 0, 0, 0] * 255 + 256 * x[:, 0, 0, 1] * 255).astype(int).tolist()
    return np.round(x[:, 0]).astype(int).tolist()


def _source(kind: str, root: Path) -> dict:
    if kind == "tfrecord":
        return make_tfrecords(root / "tfr", [50, 30, 70, 20, 40, 10, 25, 35, 15, 45, 5, 60])
    if kind == "npz":
        return make_npz(root / "d.npz", 333)
    if kind == "csv":
        return make_csv(root / "d.csv", 201)
    return make_images(root / "img", 45)


CASES = [
    ("tfrecord", dict(shard="sequential")),  # file level
    ("tfrecord", dict(shard="hash", uneven="drop")),  # file level, keyed on paths, trimmed
    ("tfrecord", dict(shard="hash", shard_key="group")),  # record level (a record key)
    ("tfrecord", dict(shard="random", reshuffle_each_epoch=True)),  # record level, new partition per epoch
    ("npz", dict(shard="random", reshuffle_each_epoch=True)),
    ("npz", dict(shard="hash", shard_key="group", uneven="drop")),
    ("csv", dict(shard="sequential")),
    ("image_folder", dict(shard="hash")),  # file level: each image is a file
]


def _plan(kind, tmp_path, **data):
    dataset, config = data_config(_source(kind, tmp_path), batch_size=8, validation_split=0.1, seed=3,
                                  shuffle_buffer=64, **data)
    plan = plan_input(dataset, config, dataset.describe(config), 2)
    return dataset, config, plan


def _check_epochs(plan, per_epoch_ids: list[list[list[int]]]) -> None:
    split = np.sort(np.concatenate(plan.shards))
    for epoch, seen in enumerate(per_epoch_ids):
        expected = plan.for_epoch(epoch)
        for p in range(2):
            assert sorted(seen[p]) == sorted(expected.epoch_records[p].tolist()), \
                f"epoch {epoch}, pipeline {p} read other records than the plan says"
        assert not set(seen[0]) & set(seen[1]), "a record was read by both pipelines"
        read = set(seen[0]) | set(seen[1])
        dropped = set(np.concatenate(expected.dropped).tolist())
        assert read | dropped == set(split.tolist()), "a record was lost"
        assert len(seen[0]) == len(seen[1]) == expected.steps * expected.batch_per_pipeline


@pytest.mark.parametrize("kind,data", CASES, ids=[f"{k}-{'-'.join(map(str, d.values()))}" for k, d in CASES])
def test_mirrored_strategy_pipelines_yield_exactly_their_planned_records(tf, tmp_path, kind, data):
    dataset, config, plan = _plan(kind, tmp_path, **data)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    options = tf.distribute.InputOptions(experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
                                         experimental_fetch_to_device=False)
    for split, training in ((plan.train, True), (plan.validation, False)):
        if split is None:
            continue
        fn = input_fn(dataset, config, split, training=training, seed=config.seed)
        batches = iter(strategy.distribute_datasets_from_function(fn, options))
        per_epoch = []
        for _ in range(EPOCHS):
            seen = [[], []]
            for _ in range(split.steps):
                x, _ = next(batches)
                for p, local in enumerate(strategy.experimental_local_results(x)):
                    seen[p] += _ids(local)
            per_epoch.append(seen)
        _check_epochs(split, per_epoch)
        if training and split.repartition is not None:
            assert sorted(per_epoch[0][0]) != sorted(per_epoch[1][0]), "reshuffle_each_epoch kept the partition"


@pytest.mark.parametrize("kind,data", [CASES[1], CASES[3], CASES[4]], ids=["tfrecord-file-hash", "tfrecord-reshuffle",
                                                                          "npz-reshuffle"])
def test_input_context_of_each_worker_yields_its_planned_records(tf, tmp_path, kind, data):
    """What each of 2 workers builds in a multi-worker run: input_fn(InputContext(2, i, 2))."""
    dataset, config, plan = _plan(kind, tmp_path, **data)
    fn = input_fn(dataset, config, plan.train, training=True, seed=config.seed)
    iterators = [iter(fn(tf.distribute.InputContext(2, i, 2))) for i in range(2)]
    per_epoch = []
    for _ in range(EPOCHS):
        seen = [[], []]
        for _ in range(plan.train.steps):
            for p in range(2):
                seen[p] += _ids(next(iterators[p])[0])
        per_epoch.append(seen)
    _check_epochs(plan.train, per_epoch)


def test_resumed_epochs_read_the_same_partition_as_an_uninterrupted_run(tf, tmp_path):
    dataset, config, plan = _plan("npz", tmp_path, shard="random", reshuffle_each_epoch=True)
    fn = input_fn(dataset, config, plan.train, training=True, seed=config.seed, initial_epoch=2)
    batches = iter(fn(tf.distribute.InputContext(2, 1, 2)))
    seen = sum((_ids(next(batches)[0]) for _ in range(plan.train.steps)), [])
    assert sorted(seen) == sorted(plan.train.for_epoch(2).epoch_records[1].tolist())


def test_training_run_json_records_the_shard_plan(train, tmp_path):
    overrides = make_tfrecords(tmp_path / "tfr", [120] * 6, width=4)
    result = train("data=tfrecord", f"data.path={overrides['path']}", "data.features={x: {shape: [4], dtype: float32}}",
                   "data.num_classes=3", "data.shard=hash", "data.shard_level=record", "data.batch_size=50",
                   "trainer.epochs=1", "model.hidden_units=[8]", "export=none")
    data = result["data"]
    assert result["status"] == "ok"
    assert data["shard_level"] == "record" and data["shard"] == "hash"
    train_report = data["train"]
    # The files are indexed (data.index=auto): the pipeline reads only its own records, by offset;
    # without an index it would read all 720 (validation records sit in the same files).
    assert train_report["read"] == "seek"
    assert train_report["records_read"] == train_report["records_kept"] == [sum(train_report["records"])]
    assert train_report["read_amplification"] == [1.0]
    assert data["index"]["used"] and data["index"]["built"] == 6 and data["index"]["seek"]
    assert train_report["uneven"]["policy"] == "repeat"
    repeated = train_report["uneven"]["repeated_per_pipeline"]
    assert sum(repeated) == train_report["repeated"] == train_report["steps"] * 50 - sum(train_report["records"])
    if 0 < sum(repeated) <= 64:
        assert len(train_report["uneven"]["repeated_ids"][0]) == repeated[0]


# ------------------------------------------------------------------------------------ mode=shards
NO_TF_WRAPPER = """
import runpy, sys
sys.argv = ["scaleflow", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("scaleflow", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code or 0
print("TENSORFLOW_IMPORTED=" + str(any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)))
sys.exit(code)
"""


def _shards_cli(tmp_path: Path, *args: str):
    import os
    import subprocess

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", NO_TF_WRAPPER, "mode=shards", f"hydra.run.dir={tmp_path / 'run'}",
                           *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_mode_shards_prints_the_table_and_writes_shards_json_without_tensorflow(tmp_path):
    overrides = make_tfrecords(tmp_path / "tfr", [40, 10, 30, 20, 25, 15, 35, 5, 50, 45])
    result = _shards_cli(tmp_path, "data=tfrecord", f"data.path={overrides['path']}", "data.num_classes=3",
                         "data.features={x: {shape: [4], dtype: float32}}", "data.shard=hash",
                         "strategy.num_workers=4", "data.batch_size=8")
    assert result.returncode == 0, result.stderr
    assert "TENSORFLOW_IMPORTED=False" in result.stdout
    assert "train: file level" in result.stdout and "skew (max/mean)" in result.stdout
    assert "uneven policy repeat:" in result.stdout
    report = json.loads((tmp_path / "run" / "shards.json").read_text())
    workers = report["pipelines"]["train"]
    assert [w["index"] for w in workers] == [0, 1, 2, 3]
    files = [f for w in workers for f in w["files"]]
    assert len(files) == len(set(files)), "a file belongs to two workers"
    assert sum(w["records"] for w in workers) == sum(report["train"]["records"])
    val_files = {f for w in report["pipelines"].get("validation", []) for f in w["files"]}
    assert not val_files & set(files), "validation files are also training files"


def test_mode_shards_lists_keys_per_worker_and_refuses_an_impossible_file_level(tmp_path):
    make_csv(tmp_path / "d.csv", 300)
    result = _shards_cli(tmp_path, "data=csv", f"data.path={tmp_path / 'd.csv'}", "data.feature_columns=[id,x1]",
                         "data.shard=hash", "data.shard_key=group", "strategy.num_workers=3", "data.batch_size=6",
                         "data.uneven=drop")
    assert result.returncode == 0, result.stderr
    assert "TENSORFLOW_IMPORTED=False" in result.stdout and "record level" in result.stdout
    workers = json.loads((tmp_path / "run" / "shards.json").read_text())["pipelines"]["train"]
    keys = [set(w["keys"]) for w in workers]
    assert set().union(*keys) == {f"g{i}" for i in range(5)}
    assert sum(map(len, keys)) == 5, "one key on two workers"

    refused = _shards_cli(tmp_path, "data=csv", f"data.path={tmp_path / 'd.csv'}", "data.feature_columns=[id,x1]",
                          "data.shard_level=file",
                          "strategy.num_workers=2")
    assert refused.returncode == 2
    assert "data.shard_level='file'" in refused.stderr and "read into memory" in refused.stderr
    assert "Traceback" not in refused.stderr


# ---------------------------------------------------------------------- a real 2-worker training run
# Installed into both worker processes through PYTHONPATH (the local launcher passes the environment
# on): taps the training input pipeline each worker hands to MultiWorkerMirroredStrategy and appends
# "<iterator>: <record ids>" for every batch it yields to ids-<pipeline>.txt.
TAP = r'''
import os
if os.environ.get("SHARD_TAP_DIR"):
    import itertools

    import numpy as np
    from scaleflow.data import input as pipeline  # where training takes input_fn from

    _input_fn = pipeline.input_fn
    _iterators = itertools.count()

    def input_fn(dataset, config, shard_plan, *, training, seed, initial_epoch=0, **options):  # e.g. service=
        fn = _input_fn(dataset, config, shard_plan, training=training, seed=seed, initial_epoch=initial_epoch,
                       **options)
        if not training:
            return fn

        def tapped(ctx):
            import tensorflow as tf

            path = os.path.join(os.environ["SHARD_TAP_DIR"], f"ids-{ctx.input_pipeline_id}.txt")

            def record(iterator, x):
                with open(path, "a") as f:
                    f.write(f"{iterator}: " + " ".join(str(int(round(v))) for v in x[:, 0]) + "\n")
                return np.int64(0)

            def iterator_ids():  # runs once per iterator: tells Keras' throwaway iterators apart
                token = next(_iterators)
                while True:
                    yield token

            def tap(batch, iterator):
                x, y = batch
                done = tf.numpy_function(record, [iterator, x], tf.int64)
                with tf.control_dependencies([done]):
                    return tf.identity(x), y

            tokens = tf.data.Dataset.from_generator(iterator_ids, output_signature=tf.TensorSpec([], tf.int64))
            return tf.data.Dataset.zip((fn(ctx), tokens)).map(tap)

        return tapped

    pipeline.input_fn = input_fn
'''


@pytest.mark.slow
@pytest.mark.parametrize("service", ["off", "local"])
def test_a_real_two_worker_run_trains_on_exactly_the_planned_partition(tmp_path, service):
    """With data.service=local each worker's pipeline runs on its own tf.data service (a dispatcher and
    2 worker processes): the records each training iterator yields must be the same."""
    import os
    import subprocess

    source = make_tfrecords(tmp_path / "tfr", [40, 30, 50, 20, 60, 10, 45, 35, 25, 55, 15, 65])
    tap_dir = tmp_path / "tap"
    tap_dir.mkdir()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(TAP)
    data = ["data=tfrecord", f"data.path={source['path']}", "data.features={x: {shape: [4], dtype: float32}}",
            "data.num_classes=3", "data.shard=hash", "data.batch_size=32", "data.seed=3"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SHARD_TAP_DIR": str(tap_dir),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    if service == "local":
        data += ["data.service=local", "data.service_workers=2"]
    result = subprocess.run([sys.executable, "-m", "scaleflow", *data, "strategy=multi_worker",
                             "strategy.num_workers=2", "trainer.epochs=2", "model.hidden_units=[8]", "export=none",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "ok" and run["data"]["num_pipelines"] == 2 and run["data"]["shard_level"] == "file"
    if service == "local":
        assert run["data"]["input"]["runs"] == "tf.data service" and run["data"]["input"]["workers"] == 2
        assert (tmp_path / "run" / "data_service" / "pids").exists() and (tmp_path / "run" / "data_service-1").exists()

    dataset, config = data_config(source, batch_size=32, validation_split=0.1, seed=3, shard="hash")
    plan = plan_input(dataset, config, dataset.describe(config), 2).train
    assert run["data"]["train"]["records"] == [len(s) for s in plan.shards]
    per_pipeline = []
    for p in range(2):
        by_iterator: dict = {}
        for line in (tap_dir / f"ids-{p}.txt").read_text().splitlines():
            iterator, _, ids = line.partition(": ")
            by_iterator.setdefault(iterator, []).append(list(map(int, ids.split())))
        # Keras may draw a batch from a throwaway iterator (to build the model); the training
        # iterator is the longest. Prefetching may add batches past the last epoch.
        batches = max(by_iterator.values(), key=len)
        assert len(batches) >= 2 * plan.steps
        per_pipeline.append([sum(batches[e * plan.steps:(e + 1) * plan.steps], []) for e in range(2)])
    _check_epochs(plan, [[per_pipeline[0][e], per_pipeline[1][e]] for e in range(2)])


def test_mode_shards_writes_every_key_and_moves_them_to_a_companion_file_when_large(tmp_path):
    from conftest import compose
    from scaleflow.modes import shards

    path = tmp_path / "many.csv"
    rows = ["id,x1,label"] + [f"{i},{i % 7},{i % 3}" for i in range(2600)]
    path.write_text("\n".join(rows) + "\n")
    cfg = compose("mode=shards", "data=csv", f"data.path={path}", "data.feature_columns=[x1]",
                  "data.shard=hash", "data.shard_key=id", "strategy.num_workers=2", "data.batch_size=8")
    shards.run(cfg, str(tmp_path / "run"))
    report = json.loads((tmp_path / "run" / "shards.json").read_text())
    assert report["keys_file"] == shards.KEYS_FILE
    keys = json.loads((tmp_path / "run" / shards.KEYS_FILE).read_text())
    for split, entries in report["pipelines"].items():
        assert [e["num_keys"] for e in entries] == [len(k) for k in keys[split]]
        assert all("keys" not in e and e["keys_file"] == shards.KEYS_FILE for e in entries)
    every = [k for split in keys.values() for pipeline in split for k in pipeline]
    assert sorted(every, key=int) == [str(i) for i in range(2600)]  # each key once, none missing
