"""Nothing is lost: a run killed with SIGKILL and started again in the same run dir continues from its
last completed epoch instead of starting over, and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 8


def command(run_dir):
    return [sys.executable, "-m", "scaleflow", f"hydra.run.dir={run_dir}", "data.num_examples=12000",
            f"trainer.epochs={EPOCHS}", "trainer.steps_per_execution=1", "model.hidden_units=[256,256]"]


def test_sigkill_then_same_command_resumes_from_last_completed_epoch(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    meta = run_dir / "backup" / "worker-0" / "training_metadata.json"
    first = subprocess.Popen(command(run_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.time() + 180
    completed = 0
    while time.time() < deadline and first.poll() is None:
        try:
            completed = json.loads(meta.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            completed = 0
        if completed >= 2:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the run finished before it could be killed: make epochs longer"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed = json.loads((run_dir / "run.json").read_text())
    assert killed["status"] == "running"  # what a hard kill leaves behind
    completed = json.loads(meta.read_text())["epoch"]
    assert 2 <= completed < EPOCHS

    second = subprocess.run(command(run_dir), env=env, capture_output=True, text=True, timeout=300)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert f"resuming from epoch {completed}/{EPOCHS}" in log
    assert f"epoch {completed}/{EPOCHS} " not in log.split("resuming from epoch")[1]  # no epoch ran twice
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "ok" and run["resumed_from_epoch"] == completed
    assert run["previous_attempts"] == 1
    assert len(run["metrics"]["history"]["loss"]) == EPOCHS  # the history covers every epoch
    assert run["export"]["verified"]
    assert not (run_dir / "backup" / "worker-0" / "training_metadata.json").exists()  # finished: nothing to resume


def test_resume_false_starts_over(tmp_path):
    from scaleflow.training.setup import completed_epochs, prepare_resume

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": 0}))
    assert completed_epochs(str(backup)) == 3
    assert prepare_resume(str(backup), resume=True) == 3
    assert prepare_resume(str(backup), resume=False) == 0 and not backup.exists()
