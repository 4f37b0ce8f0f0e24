"""Hydra's own paths: a run dir that cannot be a directory, and a user's search path, are handled
before Hydra runs (a config error, exit 2) or merged with the plugins' (never silently dropped)."""

from __future__ import annotations

import pytest

from conftest import cli, compose
from scaleflow.cli import check_output_dir, search_path_override
from scaleflow.errors import ConfigError


def test_a_run_dir_that_is_a_file_or_under_one_is_a_config_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    for value in (f"{tmp_path}/afile", f"{tmp_path}/afile/run", f"{tmp_path}/afile/" + "${now:%H}"):
        with pytest.raises(ConfigError, match=r"hydra.run.dir=.*afile is not a directory"):
            check_output_dir([f"hydra.run.dir={value}"], multirun=False)
    with pytest.raises(ConfigError, match="hydra.sweep.dir"):
        check_output_dir([f"hydra.sweep.dir={tmp_path}/afile"], multirun=True)
    check_output_dir([f"hydra.run.dir={tmp_path}/new/run"], multirun=False)  # creatable: fine


def test_a_run_dir_that_is_a_file_exits_2_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = cli(f"hydra.run.dir={tmp_path}/afile", "mode=plan", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("scaleflow: config error: hydra.run.dir=")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_user_search_path_keeps_the_plugins_config_dirs(tmp_path):
    user = f"file://{tmp_path}"
    merged = search_path_override(["model=linear", f"hydra.searchpath=[{user}]"])
    assert merged[0] == "model=linear" and len(merged) == 2
    assert merged[1].startswith(f"hydra.searchpath=['{user}',") and "pkg://scaleflow_example.conf" in merged[1]
    cfg = compose("model=linear", f"hydra.searchpath=[{user}]")  # a plugin's model, found
    assert cfg.model.name == "linear"


def test_the_user_search_path_is_searched_too(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("defaults:\n  - mlp\n  - _self_\nhidden_units: [7]\n")
    cfg = compose("model=mine", f"hydra.searchpath=[file://{tmp_path}]")
    assert list(cfg.model.hidden_units) == [7]
