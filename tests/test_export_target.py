"""Nothing trained is thrown away: an unusable export target is a config error before training, the
resume checkpoint is kept until the export is verified and in place, a rerun after a failure that
came after training goes straight to the export, and staging dirs of killed exports are cleaned."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

from conftest import QUICK, cli, compose
from scaleflow.errors import ConfigError
from scaleflow.export.target import STAGING, clean_stale_staging, staging_prefix


def test_export_dir_under_a_regular_file_is_a_config_error_before_tensorflow(tmp_path):
    (tmp_path / "models").write_text("not a directory\n")
    result = cli(f"hydra.run.dir={tmp_path / 'run'}", f"export.dir={tmp_path / 'models' / 'sub'}", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "export.dir" in result.stderr and "is a file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "run.json").exists()  # never started training


def test_relative_export_dir_is_checked_inside_the_run_dir(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "export").write_text("a file where the export dir goes\n")
    result = cli(f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode == 2 and "export.dir='export'" in result.stderr, result.stderr
    assert not (tmp_path / "run" / "run.json").exists()


def test_an_existing_export_version_is_a_config_error(tmp_path):
    (tmp_path / "models" / "clf" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"export.version=1.*already exists"):
        compose(f"export.dir={tmp_path / 'models'}", "export.name=clf", "export.version=1")
    compose(f"export.dir={tmp_path / 'models'}", "export.name=clf", "export.version=2")  # a free one is fine
    compose(f"export.dir={tmp_path / 'models'}", "export.name=clf", "export=none", "export.version=1")


def test_an_unwritable_export_dir_is_a_config_error(tmp_path):
    if os.geteuid() == 0:
        target = "/sys/scaleflow-models"  # root may write anywhere but here (sysfs refuses new entries)
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target = str(tmp_path / "ro" / "models")
    with pytest.raises(ConfigError, match="not writable"):
        compose(f"export.dir={target}")


@pytest.mark.integration
def test_failure_after_training_keeps_the_checkpoint_and_the_rerun_goes_straight_to_the_export(
        train, tmp_path, monkeypatch, caplog):
    from scaleflow.export import saved_model

    run_dir = tmp_path / "run"
    real_export = saved_model.SavedModel.export

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saved_model.SavedModel, "export", disk_full)
    from scaleflow.errors import ScaleflowError

    with pytest.raises(ScaleflowError, match="export failed: OSError.*No space left.*run the same command again"):
        train(*QUICK, run_dir=run_dir)
    failed = json.loads((run_dir / "run.json").read_text())
    assert failed["status"] == "failed" and failed["epochs_completed"] == 2
    meta = run_dir / "backup" / "worker-0" / "training_metadata.json"
    assert json.loads(meta.read_text())["epoch"] == 2  # the trained model survived the failure

    stale = run_dir / "export" / "mlp" / f".1.staging-{socket.gethostname()}-999999999-abcd"
    stale.mkdir(parents=True)  # as a SIGKILL during an export leaves it
    monkeypatch.setattr(saved_model.SavedModel, "export", real_export)
    caplog.set_level(logging.INFO, logger="scaleflow")
    caplog.clear()  # only the rerun's lines (an earlier test may have left INFO on: the first attempt's too)
    run = train(*QUICK, run_dir=run_dir)
    assert "going straight to the export" in caplog.text
    assert "epoch 1/2" not in caplog.text and "epoch 2/2" not in caplog.text  # no epoch was trained again
    assert run["status"] == "ok" and run["export"]["verified"] and run["previous_attempts"] == 1
    assert len(run["metrics"]["history"]["loss"]) == 2 and run["metrics"]["final"]["loss"] == \
        failed["metrics"]["final"]["loss"]
    assert run["throughput"] == failed["throughput"]  # measured by the attempt that trained
    assert not (run_dir / "backup").exists()  # exported and verified: nothing left to resume
    exported = os.listdir(run_dir / "export" / "mlp")
    assert "1" in exported and not [n for n in exported if ".staging-" in n]  # the stale staging dir is gone


def test_only_staging_dirs_of_dead_exports_on_this_host_are_cleaned(tmp_path):
    host = socket.gethostname()
    live = tmp_path / f".1.staging-{host}-{os.getpid()}-live"
    dead = tmp_path / f".2.staging-{host}-999999999-dead"
    elsewhere = tmp_path / ".3.staging-another-host-1-xyz"
    legacy = tmp_path / ".4.staging-k2j3h4"  # written before staging dirs named their writer
    for d in (live, dead, elsewhere, legacy, tmp_path / "1"):
        d.mkdir()
    removed = clean_stale_staging(str(tmp_path))
    assert sorted(map(os.path.basename, removed)) == sorted([dead.name, legacy.name])
    assert live.exists() and elsewhere.exists() and (tmp_path / "1").exists()
    assert STAGING.match(staging_prefix(7) + "abc123").group("pid") == str(os.getpid())
