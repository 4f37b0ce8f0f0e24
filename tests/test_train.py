"""Real training runs on small data: the default job, Mirrored over 2 logical CPUs, run.json,
verified exports that reload in a fresh process, and failures recorded as such."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import QUICK, compose

pytestmark = pytest.mark.integration


def test_default_job_learns_and_leaves_a_complete_manifest(train, tmp_path):
    run = train("data.num_examples=4096", "trainer.epochs=3")
    assert run["status"] == "ok" and run["error"] is None
    assert run["metrics"]["final"]["val_accuracy"] > 0.9
    assert len(run["metrics"]["history"]["loss"]) == 3
    for key in ("config", "versions", "strategy", "data", "throughput", "export", "started", "ended"):
        assert run[key], key
    assert run["versions"]["tensorflow"].startswith("2.21") and run["versions"]["keras"].startswith("3.")
    assert run["strategy"]["name"] == "default" and run["strategy"]["num_replicas"] == 1
    assert run["data"]["num_examples"] == 4096 and run["data"]["fingerprint"]
    assert run["throughput"]["examples_per_sec"] > 0 and run["throughput"]["steps_per_sec"] > 0
    export = run["export"]
    assert export["format"] == "saved_model" and export["verified"] and export["max_abs_diff"] <= 1e-4
    assert export["path"].endswith(os.path.join("export", "mlp", "1"))
    events = [f for _, _, fs in os.walk(tmp_path / "run" / "tensorboard") for f in fs if "tfevents" in f]
    assert len(events) >= 2  # train and validation


def test_mirrored_over_two_logical_cpus_trains_two_replicas(train):
    run = train(*QUICK, "strategy=mirrored", "hardware.logical_devices=2")
    assert run["status"] == "ok"
    assert run["strategy"]["name"] == "mirrored" and run["strategy"]["num_replicas"] == 2
    assert run["export"]["verified"]


def test_auto_picks_mirrored_for_logical_cpu_devices(train):
    run = train(*QUICK, "hardware.logical_devices=2")
    assert run["strategy"]["name"] == "mirrored"


RELOAD = """
import json, sys
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
(name, spec), = fn.structured_input_signature[1].items()
x = np.load(sys.argv[2])
outputs = fn(**{name: tf.constant(x)})
np.save(sys.argv[3], outputs["scores"].numpy())  # besides class_id and class_name (export/signatures.py)
"""


def test_export_reloads_in_a_fresh_process_with_the_same_outputs(train, tf, tmp_path):
    run = train(*QUICK)
    path = run["export"]["path"]
    x = np.random.default_rng(0).normal(size=(8, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", RELOAD, path, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    here = tf.saved_model.load(path)
    expected = here.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-6)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)
    cli_tool = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable))
    shown = subprocess.run([cli_tool, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "serving_default" in shown.stdout


def test_exports_are_versioned_never_overwritten_and_leave_no_staging(train, tmp_path):
    export_dir = tmp_path / "models"
    train(*QUICK, f"export.dir={export_dir}", "export.name=clf", run_dir=tmp_path / "a")
    train(*QUICK, f"export.dir={export_dir}", "export.name=clf", run_dir=tmp_path / "b")
    # TF Serving layout, next version each time (labels.json says which is stable: scaleflow/deploy)
    assert sorted(os.listdir(export_dir / "clf")) == ["1", "2", "labels.json"]
    from scaleflow.errors import ScaleflowError

    with pytest.raises(ScaleflowError, match="already exists"):  # found by validation, before training
        train(*QUICK, f"export.dir={export_dir}", "export.name=clf", "export.version=2", run_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "run.json").exists()
    assert sorted(os.listdir(export_dir / "clf")) == ["1", "2", "labels.json"]  # nothing half-written or replaced


def test_failed_export_verification_fails_the_run(train, tmp_path, monkeypatch):
    from scaleflow.export import saved_model

    # As if the reloaded model disagreed with the trained one.
    monkeypatch.setattr(saved_model.SavedModel, "load", lambda self, d, r: (lambda x: r.model(x) + 0.5))
    from scaleflow.errors import ScaleflowError

    with pytest.raises(ScaleflowError, match="verification failed"):
        train(*QUICK)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "failed" and "verification failed" in run["error"]
    assert not os.path.exists(tmp_path / "run" / "export" / "mlp" / "1")  # an unverified model never lands


def test_tflite_export_is_verified_against_keras(train):
    run = train(*QUICK, "export=tflite")
    assert run["export"]["format"] == "tflite" and run["export"]["verified"]
    assert run["export"]["max_abs_diff"] < 1e-4 and run["export"]["path"].endswith("model.tflite")


def test_bf16_mixed_precision_trains_and_exports_float32_tflite(train):
    run = train(*QUICK, "trainer.mixed_precision=bf16", "export=tflite")
    assert run["status"] == "ok" and run["export"]["verified"]


def test_cnn_and_resnet_train(train):
    for model in (["model=cnn", "model.filters=[4]", "model.dense_units=8"],
                  ["model=resnet", "model.width=4", "model.stages=1", "model.depth=1"]):
        run = train("data.num_examples=512", "trainer.epochs=1", "export=none", *model)
        assert run["status"] == "ok"


def test_steps_per_execution_divides_the_epoch_and_its_validation():
    from scaleflow.hardware.base import steps_per_execution

    assert steps_per_execution("auto", 256, "cpu") == 32
    assert steps_per_execution("auto", 231, "cpu") == 21  # 231 = 3 x 7 x 11
    assert steps_per_execution("auto", 5, "cpu") == 5
    assert steps_per_execution(8, 232, "cpu") == 8
    assert steps_per_execution(8, 231, "cpu") == 7
    assert steps_per_execution("auto", 41, "cpu") == 1  # a prime epoch: exact beats fast
    assert steps_per_execution("auto", 64, "cpu", cap=1) == 1
    assert steps_per_execution("auto", 1024, "tpu") == 128


def test_every_epoch_runs_exactly_its_planned_steps(train, monkeypatch):
    """Keras runs whole calls of steps_per_execution steps: a call crossing the epoch's end used to
    run on into the next epoch's records (42 planned steps ran as 64)."""
    import keras

    seen = {}
    fit = keras.Model.fit

    def counting_fit(self, *args, **kwargs):
        history = fit(self, *args, **kwargs)
        seen.update(iterations=int(self.optimizer.iterations.numpy()), steps=kwargs["steps_per_epoch"],
                    epochs=kwargs["epochs"], spe=self.steps_per_execution)
        return history

    monkeypatch.setattr(keras.Model, "fit", counting_fit)
    train("data.num_examples=2986", "data.validation_split=0.1", "trainer.epochs=2", "model.hidden_units=[8]",
          "export=none")
    assert seen["steps"] == 42 and seen["spe"] == 21
    assert seen["iterations"] == seen["epochs"] * seen["steps"]


def test_same_seed_same_result(train, tmp_path):
    a = train(*QUICK, "export=none", run_dir=tmp_path / "a")
    b = train(*QUICK, "export=none", run_dir=tmp_path / "b")
    assert a["metrics"]["history"]["loss"] == pytest.approx(b["metrics"]["history"]["loss"], rel=1e-5)


def test_bf16_saved_model_export_is_verified_with_a_precision_aware_tolerance(train):
    run = train(*QUICK, "trainer.mixed_precision=bf16")
    assert run["status"] == "ok" and run["export"]["verified"] and run["export"]["max_abs_diff"] <= 1e-2


@pytest.mark.parametrize("failing", ["hardware", "strategy"])
def test_a_run_that_fails_configuring_hardware_or_creating_its_strategy_says_so_in_run_json(
        train, tmp_path, monkeypatch, failing):
    from scaleflow import registry
    from scaleflow.errors import ScaleflowError

    target = registry.get("hardware", "cpu") if failing == "hardware" else registry.get("strategy", "default")
    method = "configure" if failing == "hardware" else "create"

    def broken(self, cfg):
        raise ScaleflowError(f"no {failing} here")

    monkeypatch.setattr(target, method, broken)
    with pytest.raises(ScaleflowError, match=f"no {failing} here"):
        train(*QUICK, "strategy=default", run_dir=tmp_path / failing)
    run = json.loads((tmp_path / failing / "run.json").read_text())
    assert run["status"] == "failed" and f"no {failing} here" in run["error"] and run["ended"]
