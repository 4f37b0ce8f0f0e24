"""Wrong results never look right: NaN or inf in the inputs is a data error naming the file, record
and feature; a diverging loss fails the run at its epoch and step unless trainer.on_nan=continue;
run.json is always strict JSON (non-finite numbers stored as null, with a note saying where)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import compose
from scaleflow.errors import DataError
from scaleflow.manifest import atomic_write_json

pytestmark = pytest.mark.integration
# SGD at the largest learning rate with momentum: the loss overflows within a few short epochs.
DIVERGING = ["data.num_examples=1024", "model.hidden_units=[32]", "trainer.optimizer=sgd", "trainer.learning_rate=10",
             "trainer.momentum=0.9"]


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"bare {constant} in {path}: not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def points(n=200, features=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    return (rng.normal(size=(n, features)) + 3 * np.eye(3, features)[y]).astype(np.float32), y


def test_nan_in_an_in_memory_source_is_named_before_training(tmp_path):
    from scaleflow import registry

    x, y = points()
    x[17, 2] = np.nan
    np.savez(tmp_path / "train.npz", x=x, y=y)
    cfg = compose("data=npz", f"data.path={tmp_path / 'train.npz'}")
    with pytest.raises(DataError, match=r"train.npz: record 17, feature x\[:, 2\]: nan is not a finite number"):
        registry.get("dataset", "npz")().describe(cfg.data)  # describe: no TensorFlow, before any step


def test_inf_in_a_tfrecord_stops_the_read_naming_file_and_record(train, tf, tmp_path):
    x, y = points(n=300)
    x[250, 1] = np.inf
    (tmp_path / "records").mkdir()
    for f, part in enumerate(np.array_split(np.arange(len(x)), 2)):
        with tf.io.TFRecordWriter(str(tmp_path / "records" / f"part-{f}.tfrecord")) as w:
            for i in part:
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])]))}))
                    .SerializeToString())
    with pytest.raises(DataError, match=r"part-1.tfrecord: record 100, feature x\[1\]: inf is not a finite"):
        train("data=tfrecord", f"data.path={tmp_path / 'records'}", "data.features={x: {shape: [4]}}",
              "data.validation_split=0", "data.shuffle_buffer=0", "trainer.epochs=1", "model.hidden_units=[8]",
              run_dir=tmp_path / "run")
    run = strict_json(tmp_path / "run" / "run.json")
    assert run["status"] == "failed" and "part-1.tfrecord: record 100" in run["error"]


def test_a_diverging_loss_fails_the_run_at_its_epoch_and_step(train, tmp_path):
    from scaleflow.training.non_finite import NonFiniteLoss

    with pytest.raises(NonFiniteLoss, match=r"became (nan|inf) in epoch \d, step \d+"):
        train(*DIVERGING, "trainer.epochs=5", "trainer.steps_per_execution=1")
    run = strict_json(tmp_path / "run" / "run.json")
    assert run["status"] == "failed" and run["failed_at"]["step"] >= 1
    assert run["failed_at"]["epoch"] == run.get("epochs_completed", 0) + 1  # stopped in the epoch it diverged
    assert not (tmp_path / "run" / "export").exists()


def test_on_nan_continue_trains_on_and_run_json_stays_strict_json(train, tmp_path):
    train(*DIVERGING, "trainer.epochs=5", "trainer.on_nan=continue", "export=none")
    run = strict_json(tmp_path / "run" / "run.json")
    assert run["status"] == "ok" and run["metrics"]["final"]["loss"] is None
    assert run["non_finite"]["values"]["metrics.final.loss"] in ("nan", "inf")


def test_non_finite_numbers_are_written_as_null_with_a_note(tmp_path):
    atomic_write_json(str(tmp_path / "r.json"), {"loss": np.float32("nan"), "h": [1.0, float("-inf")]})
    data = strict_json(tmp_path / "r.json")
    assert data["loss"] is None and data["h"] == [1.0, None]
    assert data["non_finite"]["values"] == {"loss": "nan", "h[1]": "-inf"}
    assert compose("trainer.on_nan=continue").trainer.on_nan == "continue"
    with pytest.raises(Exception, match="trainer.on_nan"):
        compose("trainer.on_nan=ignore")
