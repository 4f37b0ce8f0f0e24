"""Automated deployment: promotion on the objective, rollback, and cluster manifests that validate
against the Kubernetes and KServe schema models (no cluster, no network)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import QUICK, REPO, compose


@pytest.fixture(scope="module")
def two_runs(tf, tmp_path_factory):
    """A weak run, then a strong one, exporting into one export.dir: (model root, run dirs, run.jsons)."""
    from scaleflow.training.train import run

    base = tmp_path_factory.mktemp("promotion")
    shared = [*QUICK, f"export.dir={base / 'models'}", "export.name=clf", "data.num_classes=4"]
    settings = {"weak": ["trainer.epochs=1", "trainer.learning_rate=1e-6"],
                "strong": ["trainer.epochs=2", "trainer.learning_rate=1e-2"]}
    dirs, manifests = {}, {}
    for name, extra in settings.items():
        dirs[name] = str(base / name)
        run(compose(*shared, *extra), dirs[name])
        manifests[name] = json.loads(open(os.path.join(dirs[name], "run.json")).read())
    return str(base / "models" / "clf"), dirs, manifests


def test_first_export_becomes_stable_and_a_better_one_replaces_it(two_runs):
    from scaleflow.deploy import labels

    root, _, runs = two_runs
    weak, strong = runs["weak"]["export"]["promotion"], runs["strong"]["export"]["promotion"]
    assert (weak["decision"], weak["reason"]) == ("stable", "no stable version yet")
    assert strong["decision"] == "stable" and strong["previous_stable"] == 1
    assert strong["objective"] == "val_loss" and strong["value"] < strong["stable_value"]
    assert "beats stable version 1" in strong["reason"] and strong["records"] == 102
    assert labels.read_labels(root)["stable"] == 2


def test_a_worse_export_stays_canary_and_says_why(two_runs):
    from scaleflow.deploy import labels
    from scaleflow.deploy.promote import promote_run
    from scaleflow.sweep.callback import promote_best

    root, dirs, _ = two_runs
    record = promote_best({"best_run_dir": dirs["weak"]})  # how a multirun ends: its best job, re-judged
    assert record["decision"] == "canary" and record["version"] == 1
    assert "does not beat stable version 2" in record["reason"]
    assert labels.read_labels(root) == {"stable": 2, "canary": 1}
    assert json.loads(open(os.path.join(dirs["weak"], "run.json")).read())["export"]["promotion"] == record
    assert promote_run(dirs["weak"])["decision"] == "canary"  # judging again changes nothing


def test_an_export_trained_on_other_data_is_not_compared(two_runs):
    from scaleflow.deploy.promote import decide
    from scaleflow.export.base import ExportRequest

    root, dirs, runs = two_runs
    cfg = compose(*QUICK, "export.dir=unused")
    request = ExportRequest(model=None, cfg=cfg, run_dir=dirs["weak"], sample=None,
                            identity={"data_fingerprint": "sha256:other"}, validation=None)
    record = decide(cfg, os.path.join(root, "1"), 1, request)
    assert record["decision"] == "canary" and "trained on other data" in record["reason"]


def test_promote_always_and_never(two_runs, tmp_path):
    import shutil

    from scaleflow.deploy import labels
    from scaleflow.deploy.promote import decide, promote_after_training
    from scaleflow.export.base import ExportRequest

    root, dirs, _ = two_runs
    copy = tmp_path / "clf"
    for version in ("1", "2"):
        shutil.copytree(os.path.join(root, version), copy / version)
    labels.move(str(copy), {"stable": 2}, action="promote")
    cfg = compose(*QUICK, "export.promote=always")
    request = ExportRequest(model=None, cfg=cfg, run_dir=dirs["weak"], sample=None)
    record = decide(cfg, str(copy / "1"), 1, request)  # worse, but always
    assert (record["decision"], record["reason"]) == ("stable", "export.promote=always")
    assert labels.read_labels(str(copy)) == {"stable": 1}
    never = compose(*QUICK, "export.promote=never")
    assert promote_after_training(never, {"dir": str(copy / "2"), "version": 2, "verified": True},
                                  request)["decision"] == "none"
    assert labels.read_labels(str(copy)) == {"stable": 1}


def _deploy(root, out, *overrides):
    from scaleflow.modes.deploy import run

    return run(compose("mode=deploy", f"deploy.model_dir={root}", f"deploy.out={out}", *overrides), str(out))


def test_tfserving_manifests_validate_and_serve_both_labelled_versions(two_runs, tmp_path):
    from google.protobuf import text_format
    from kubernetes.client import models as k8s
    from tensorflow_serving.config import model_server_config_pb2

    from scaleflow.deploy.manifests import validate

    from scaleflow.deploy import labels

    root, _, _ = two_runs
    labels.move(root, {"stable": 2, "canary": 1}, action="set")  # as promotion leaves them (test above)
    summary = _deploy(root, tmp_path, "deploy.target=tfserving", "deploy.max_replicas=6")
    assert summary["versions"] == [1, 2] and summary["labels"] == {"stable": 2, "canary": 1}
    docs = list(yaml.safe_load_all(open(tmp_path / "tfserving.yaml")))
    kinds = [type(validate(doc)) for doc in docs]  # the Kubernetes client's strict pydantic models
    assert kinds == [k8s.V1ConfigMap, k8s.V1Deployment, k8s.V1Service, k8s.V2HorizontalPodAutoscaler]
    deployment, hpa = validate(docs[1]), validate(docs[3])
    assert deployment.spec.template.spec.containers[0].image == "tensorflow/serving:2.21.0"
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 6)
    config = text_format.Parse(open(tmp_path / "models.config").read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path) == ("clf", "/models/clf")
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 2, "canary": 1}
    assert docs[0]["data"]["models.config"] == open(tmp_path / "models.config").read()


def test_kserve_inference_service_validates_against_kserve_models(two_runs, tmp_path):
    from kserve import models as kserve_models

    from scaleflow.deploy.manifests import ManifestError, validate

    from scaleflow.deploy import labels

    root, _, _ = two_runs
    labels.move(root, {"stable": 2, "canary": 1}, action="set")
    _deploy(root, tmp_path, "deploy.target=kserve", "deploy.storage_uri=s3://bucket/models/clf")
    (doc,) = yaml.safe_load_all(open(tmp_path / "inferenceservice.yaml"))
    isvc = validate(doc)
    assert isinstance(isvc, kserve_models.V1beta1InferenceService)
    assert isvc.spec.predictor.model.storage_uri == "s3://bucket/models/clf"
    assert isvc.spec.predictor.model.model_format.name == "tensorflow"
    assert "--model_config_file=/mnt/models/models.config" in isvc.spec.predictor.model.args
    assert doc["metadata"]["annotations"]["scaleflow.io/stable-version"] == "2"
    doc["spec"]["predictor"]["model"]["storageUrl"] = doc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(ManifestError, match="unknown field.*storageUrl"):
        validate(doc)
    doc["spec"]["predictor"] = {"minReplicas": "two"}
    with pytest.raises(ManifestError, match="minReplicas: expected int"):
        validate(doc)


def test_rollback_moves_stable_back_to_the_previous_stable(two_runs, tmp_path):
    from scaleflow.deploy import labels

    root, _, _ = two_runs
    before = labels.read_labels(root)
    labels.move(root, {"stable": 2, "canary": 1}, action="set")
    summary = _deploy(root, tmp_path, "deploy.rollback=true")
    try:
        assert summary["rollback"] == {"from": 2, "to": 1}
        assert labels.read_labels(root) == {"stable": 1, "canary": 1}
        assert labels.read_state(root)["history"][-1]["action"] == "rollback"
    finally:
        labels.move(root, before, action="set", reason="test cleanup")


def test_deploy_needs_a_run_or_a_model_dir(tmp_path):
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError, match="run=None: expected a run dir, or deploy.model_dir"):
        compose("mode=deploy")
    with pytest.raises(ConfigError, match="deploy.model_dir"):
        compose("mode=deploy", f"deploy.model_dir={tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="deploy.max_replicas"):
        compose("mode=deploy", f"deploy.model_dir={tmp_path}", "deploy.min_replicas=3", "deploy.max_replicas=2")


@pytest.mark.slow
def test_mode_deploy_cli_writes_manifests_without_tensorflow(two_runs, tmp_path):
    root, dirs, _ = two_runs
    code = ("import sys; from scaleflow.cli import main\n"
            "try:\n    main(sys.argv[1:])\nfinally:\n    assert 'tensorflow' not in sys.modules, 'TF imported'\n")
    result = subprocess.run([sys.executable, "-c", code, "mode=deploy", "deploy.target=tfserving",
                             f"run={dirs['strong']}", f"hydra.run.dir={tmp_path}"],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "kubectl apply -f" in result.stdout and (tmp_path / "tfserving.yaml").exists()


def test_a_model_dir_without_a_verified_export_is_a_config_error(tmp_path):
    from scaleflow.errors import ConfigError

    (tmp_path / "1").mkdir()  # a version dir without its integrity file: never deployed
    with pytest.raises(ConfigError, match="a model directory with a verified export.*1 unverified"):
        _deploy(tmp_path, tmp_path / "out")
