"""The registry is the one way names become objects; built-ins register like plugins."""

from __future__ import annotations

import json

import pytest

from conftest import cli
from scaleflow import registry
from scaleflow.errors import ConfigError

BUILT_INS = {
    "model": {"mlp", "cnn", "resnet"},
    "dataset": {"synthetic", "csv", "npz", "tfrecord", "image_folder"},
    "strategy": {"auto", "default", "mirrored"},
    "hardware": {"cpu", "gpu"},
    "exporter": {"saved_model", "tflite", "none"},
    "callback": {"throughput"},
}


@pytest.mark.parametrize("kind", sorted(BUILT_INS))
def test_built_ins_are_entry_points_of_the_scaleflow_distribution(kind):
    found = registry.registrations(kind)
    for name in BUILT_INS[kind]:
        assert found[name].distribution == "scaleflow"
        obj = registry.get(kind, name)
        assert obj.name == name


def test_unknown_name_is_a_config_error_with_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'resnet'"):
        registry.get("model", "resnte")


def test_a_config_cannot_name_an_import_path():
    with pytest.raises(ConfigError):
        registry.get("model", "os:system")


def test_mode_plugins_lists_by_kind_with_distribution(tmp_path):
    result = cli("mode=plugins", f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=60, check=True)
    assert "model (scaleflow.models):" in result.stdout
    assert "linear" in result.stdout and "[scaleflow-example]" in result.stdout
    listed = json.loads((tmp_path / "plugins.json").read_text())
    assert listed["model"]["mlp"]["distribution"] == "scaleflow"
    assert listed["dataset"]["moons"]["distribution"] == "scaleflow-example"


def test_loading_every_registration_imports_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from scaleflow import registry; registry.all_loaded(); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "False"
