"""Every export is sealed: identity, SHA-256 of every file and metadata in scaleflow_export.json,
shared with run.json's `model` block; any changed, missing or added file is found."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import QUICK


@pytest.fixture(scope="module")
def exported(tf, tmp_path_factory):
    from scaleflow.cli import compose
    from scaleflow.training.train import run

    run_dir = tmp_path_factory.mktemp("sealed") / "run"
    run(compose([*QUICK]), str(run_dir))
    return json.loads((run_dir / "run.json").read_text())


def test_export_carries_its_identity_checksums_and_training_statistics(exported):
    from scaleflow.export.integrity import MANIFEST_NAME, verify_export

    path = exported["export"]["path"]
    sealed = json.loads(Path(path, MANIFEST_NAME).read_text())
    assert "saved_model.pb" in sealed["files"] and sealed["checksum"].startswith("sha256:")
    assert verify_export(path).ok
    # One identity: run.json's model block, the export block and the integrity file agree.
    identity = exported["model"]
    assert identity == sealed["identity"] == exported["export"]["identity"]
    assert identity["name"] == "mlp" and identity["version"] == 1
    assert identity["export_checksum"] == sealed["checksum"]
    assert identity["data_fingerprint"] == exported["data"]["fingerprint"]
    assert identity["config_hash"].startswith("sha256:") and identity["code_version"]
    stats = sealed["metadata"]["feature_stats"]
    assert len(stats["mean"]) == exported["data"]["input_shape"][0] and stats["count"] > 0
    assert sealed["metadata"]["task"] == "classification"


def test_changed_added_or_missing_files_are_found(exported, tmp_path):
    import shutil

    from scaleflow.export.integrity import MANIFEST_NAME, verify_export

    copy = tmp_path / "1"
    shutil.copytree(exported["export"]["path"], copy)
    (copy / "variables" / "variables.index").write_bytes(b"tampered")
    (copy / "extra.txt").write_text("x")
    os.remove(copy / "saved_model.pb")
    result = verify_export(str(copy))
    assert not result.ok
    text = result.reason
    assert "changed file variables/variables.index" in text and "unexpected file extra.txt" in text
    assert "missing file saved_model.pb" in text
    # Editing the manifest to match is caught too: the file list has its own checksum.
    sealed = json.loads((copy / MANIFEST_NAME).read_text())
    sealed["files"]["extra.txt"] = "0" * 64
    (copy / MANIFEST_NAME).write_text(json.dumps(sealed))
    assert "was edited" in verify_export(str(copy)).reason
    shutil.rmtree(copy)
    copy.mkdir()
    assert "no readable scaleflow_export.json" in verify_export(str(copy)).reason


def test_config_hash_is_canonical():
    from scaleflow.identity import config_hash

    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_a_new_exporter_writes_and_loads_only(tf, tmp_path):
    """The template stages, compares, seals and renames: a format implements two methods."""
    from scaleflow.cli import compose
    from scaleflow.export.base import Exporter, ExportRequest, ExportVerificationError
    from scaleflow.export.integrity import verify_export

    import keras

    class NumpyWeights(Exporter):
        name = "numpy_weights"

        def write(self, model, directory, request):
            os.makedirs(directory)
            np.savez(os.path.join(directory, "weights.npz"), *model.get_weights())
            return {"path": os.path.join(directory, "weights.npz")}

        def load(self, directory, request):
            weights = np.load(os.path.join(directory, "weights.npz"))
            clone = keras.models.clone_model(request.model)
            clone.set_weights([weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))])
            return lambda x: clone(x, training=False)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    cfg = compose(["export.dir=" + str(tmp_path), "export.name=w"])
    request = ExportRequest(model=model, cfg=cfg, run_dir=str(tmp_path), sample=np.ones((4, 3), np.float32),
                            identity={"run_dir": str(tmp_path)}, metadata={"task": "regression"})
    out = NumpyWeights().export(request)
    assert out["verified"] and out["path"] == str(tmp_path / "w" / "1" / "weights.npz")
    assert verify_export(str(tmp_path / "w" / "1")).ok

    class Broken(NumpyWeights):
        def load(self, directory, request):
            return lambda x: np.full((len(x), 2), np.nan, np.float32)

    with pytest.raises(ExportVerificationError):
        Broken().export(request)
    assert sorted(os.listdir(tmp_path / "w")) == ["1"]  # nothing staged is left behind
