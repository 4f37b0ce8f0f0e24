"""A config runs no code: `_target_` outside scaleflow's own callbacks is refused (issue 16, item 6)."""

from __future__ import annotations

import pytest

from conftest import cli
from scaleflow.errors import ConfigError
from scaleflow.security import targets


def test_scaleflow_callbacks_and_hydra_plugins_are_trusted_anything_else_is_refused():
    targets.check({"hydra": {"callbacks": {"s": {"_target_": "scaleflow.sweep.callback.SweepSummary"}},
                             "launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"},
                             "job_logging": {"handlers": {"file": {"class": "logging.FileHandler"}}}}})
    for tree, key in [({"hydra": {"callbacks": {"x": {"_target_": "builtins.open"}}}}, "hydra.callbacks.x._target_"),
                      ({"hydra": {"launcher": {"_target_": "shutil.copyfile"}}}, "hydra.launcher._target_"),
                      ({"model": {"init": {"_target_": "os.remove"}}}, "model.init._target_"),
                      ({"hydra": {"job_logging": {"handlers": {"h": {"()": "shutil.rmtree"}}}}},
                       "hydra.job_logging.handlers.h.()")]:
        with pytest.raises(ConfigError) as e:
            targets.check(tree)
        assert e.value.key == key and "security.allow_targets" in str(e.value)
    targets.check({"hydra": {"callbacks": {"x": {"_target_": "my.Callback"}}}}, allowed=["my.Callback"])


def test_only_the_command_line_can_allow_a_target():
    assert targets.command_line_allowed(["security.allow_targets=[a.B,c.D]", "mode=plan"]) == ["a.B", "c.D"]
    assert targets.command_line_allowed(["mode=plan"]) == []


@pytest.mark.slow
def test_builtins_open_on_the_command_line_is_refused_and_writes_nothing(tmp_path):
    victim = tmp_path / "written_by_config"
    result = cli("mode=plan", "+hydra.callbacks.evil._target_=builtins.open", f"+hydra.callbacks.evil.file={victim}",
                 "+hydra.callbacks.evil.mode=w", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert "hydra.callbacks.evil._target_='builtins.open'" in result.stderr and "Traceback" not in result.stderr
    assert not victim.exists()


@pytest.mark.slow
def test_shutil_copyfile_in_an_experiment_file_on_the_searchpath_is_refused(tmp_path):
    source, copy = tmp_path / "source.txt", tmp_path / "copied.txt"
    source.write_text("data")
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "shared.yaml").write_text(
        "# @package _global_\ntrainer:\n  epochs: 1\nhydra:\n  callbacks:\n    copier:\n"
        f"      _target_: shutil.copyfile\n      src: {source}\n      dst: {copy}\n")
    common = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=shared", "mode=plan"]
    result = cli(*common, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert "hydra.callbacks.copier._target_='shutil.copyfile'" in result.stderr
    assert not copy.exists()
    # The same file cannot allow itself; the command line can (here Hydra then calls it).
    allowed = cli(*common, "security.allow_targets=[shutil.copyfile]", f"hydra.run.dir={tmp_path / 'run2'}")
    assert "_target_" not in allowed.stderr and copy.exists()
