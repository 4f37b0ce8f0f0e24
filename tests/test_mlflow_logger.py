"""logger=mlflow against a real local MLflow store (SQLite): params, per-epoch metrics, artifacts and
the export as a registered model version tagged with the model identity; a resumed run continues the
same MLflow run; a sweep's jobs hang under one parent run."""

from __future__ import annotations

import json

import pytest

from conftest import QUICK, cli


def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def client(uri):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def test_a_run_is_logged_with_params_metrics_artifacts_and_a_model_version(train, tmp_path):
    uri = store(tmp_path)
    run = train(*QUICK, "logger=mlflow", f"logger.tracking_uri={uri}")
    run_id = json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"]
    c = client(uri)
    logged = c.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["trainer.epochs"] == "2" and logged.data.params["model.name"] == "mlp"
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [0, 1]
    assert logged.data.metrics["val_accuracy"] == pytest.approx(run["metrics"]["final"]["val_accuracy"])
    artifacts = {a.path for a in c.list_artifacts(run_id)}
    assert {"run.json", "tensorboard", "export"} <= artifacts
    version = c.get_model_version("mlp", "1")
    assert version.run_id == run_id
    assert version.tags["scaleflow.export_checksum"] == run["model"]["export_checksum"]
    assert version.tags["scaleflow.config_hash"] == run["model"]["config_hash"]


def test_a_resumed_run_continues_the_same_mlflow_run(train, tmp_path, monkeypatch):
    import keras

    uri = store(tmp_path)
    original = keras.callbacks.TensorBoard.on_epoch_end

    def crash_after_epoch_2(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", crash_after_epoch_2)
    args = ["data.num_examples=1024", "model.hidden_units=[16]", "trainer.epochs=3", "export=none",
            "logger=mlflow", f"logger.tracking_uri={uri}"]
    with pytest.raises(RuntimeError):
        train(*args)
    run_id = json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"]
    assert client(uri).get_run(run_id).info.status == "FAILED"
    monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", original)
    run = train(*args)
    assert run["resumed_from_epoch"] == 2
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == run_id
    c = client(uri)
    assert c.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [0, 1, 2]  # no epoch twice, none missing
    assert len(c.search_runs([c.get_experiment_by_name("scaleflow").experiment_id])) == 1


@pytest.mark.slow
def test_a_sweep_logs_one_child_run_per_job_under_one_parent(tmp_path):
    uri = store(tmp_path)
    result = cli("-m", "trainer.learning_rate=1e-3,1e-2", "trainer.epochs=1", "data.num_examples=256",
                 "model.hidden_units=[8]", "export=none", "logger=mlflow", f"logger.tracking_uri={uri}",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    c = client(uri)
    runs = c.search_runs([c.get_experiment_by_name("scaleflow").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.params["trainer.learning_rate"] for r in children} == {"0.001", "0.01"}
    assert parents[0].info.status == "FINISHED"
