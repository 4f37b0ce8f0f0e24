"""`pip install .` (not editable) gives a package that runs from any directory: conf/ ships inside it
as scaleflow.conf, and the built-ins are registered through entry points in its metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, timeout=300, capture_output=True)
    (path,) = out.glob("scaleflow-*.whl")
    return path


def test_wheel_ships_the_config_tree_and_entry_points(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for conf in ("scaleflow/conf/config.yaml", "scaleflow/conf/model/mlp.yaml", "scaleflow/conf/data/csv.yaml",
                 "scaleflow/conf/strategy/multi_worker.yaml", "scaleflow/conf/hparams_search/optuna.yaml"):
        assert conf in names, conf
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[scaleflow.models]" in text and "mlp = scaleflow.models.mlp:MLP" in text


def test_installed_wheel_runs_from_any_directory(wheel, tmp_path):
    """The unpacked wheel first on sys.path (as site-packages would be) shadows the checkout."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys, scaleflow; from scaleflow.cli import main; print(scaleflow.__file__, file=sys.stderr); "
            "main(['--cfg', 'job', 'model=cnn'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(site) in result.stderr  # the installed copy, not the checkout
    assert "name: cnn" in result.stdout and "filters:" in result.stdout
