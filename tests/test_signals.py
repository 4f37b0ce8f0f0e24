"""SIGTERM (Slurm, Kubernetes, `timeout`) and SIGINT (Ctrl-C) end a run cleanly: the step in progress
finishes, the last completed epoch's checkpoint is kept, run.json says `interrupted` with the command
that resumes, and the process exits 143 / 130 without a traceback; every worker of a multi-process
run does the same. Real processes, tiny data, epochs long enough to be signalled mid-training."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

try:  # the plugin and a Horovod built for this TensorFlow
    from scaleflow_horovod import install

    install.check()
    HOROVOD = None
except Exception as e:  # noqa: BLE001 - the reason is the skip message
    HOROVOD = str(e)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NEVER_ENDING = ["data.num_examples=1024", "trainer.epochs=1000", "model.hidden_units=[16]",
                "trainer.steps_per_execution=1"]


def start(run_dir, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scaleflow", f"hydra.run.dir={run_dir}", *NEVER_ENDING,
                             *overrides], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def checkpointed_epoch(run_dir, worker: int = 0) -> int:
    try:
        return json.loads((run_dir / "backup" / f"worker-{worker}" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_a_checkpoint(proc: subprocess.Popen, run_dir, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    while checkpointed_epoch(run_dir) < 1:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no epoch completed in time"
        time.sleep(0.05)


def stop(proc: subprocess.Popen, sig: int) -> tuple[str, str]:
    proc.send_signal(sig)  # to the process itself, as `kill` and `timeout` do
    try:
        return proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_finishes_the_step_keeps_the_checkpoint_and_the_recorded_command_resumes(train, tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    wait_for_a_checkpoint(proc, run_dir)
    out, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in out + err and "scaleflow: interrupted: SIGTERM" in err
    run = json.loads((run_dir / "run.json").read_text())
    completed = checkpointed_epoch(run_dir)
    assert run["status"] == "interrupted" and "SIGTERM" in run["error"] and run["ended"]
    assert run["epochs_completed"] == completed >= 1  # the checkpoint is the last completed epoch
    assert f"hydra.run.dir={run_dir}" in run["resume_command"]

    # The recorded command resumes (run in this process, to save a TensorFlow start).
    args = [a for a in shlex.split(run["resume_command"])[3:] if not a.startswith("hydra.run.dir=")]
    final = train(*args, f"trainer.epochs={completed + 1}", run_dir=run_dir)
    assert final["status"] == "ok" and final["previous_attempts"] == 1
    assert final["resumed_from_epoch"] == completed and len(final["metrics"]["history"]["loss"]) == completed + 1


def test_sigint_during_training_is_an_interruption_with_status_130(train, tmp_path):
    """In-process (the CLI turns TrainingInterrupted into its exit status, as for SIGTERM above)."""
    import threading

    from scaleflow.signals import TrainingInterrupted

    run_dir = tmp_path / "run"

    def press_ctrl_c():
        deadline = time.time() + 120
        while checkpointed_epoch(run_dir) < 1 and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(TrainingInterrupted) as interrupted:
        train(*NEVER_ENDING, run_dir=run_dir)
    assert interrupted.value.exit_code == 130
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and "SIGINT" in run["error"]
    assert run["epochs_completed"] == checkpointed_epoch(run_dir) >= 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored after the run


def test_sigterm_to_a_multi_worker_launcher_stops_every_worker_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, "strategy=multi_worker", "strategy.num_workers=2", "strategy.timeout_s=30")
    wait_for_a_checkpoint(proc, run_dir, timeout=240)
    out, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, (out + err)[-3000:]
    assert "forwarded to 2 workers" in err and "Traceback" not in err
    for rank in range(2):
        log = (run_dir / "workers" / f"worker-{rank}.out").read_text()
        assert "scaleflow: interrupted: SIGTERM" in log and "Traceback" not in log, log[-2000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and "hydra.job.name" not in run["resume_command"]
    assert checkpointed_epoch(run_dir, 0) == checkpointed_epoch(run_dir, 1) >= 1  # both resume from it


@pytest.mark.skipif(HOROVOD is not None, reason=f"no usable Horovod: {HOROVOD}")
def test_sigterm_to_a_horovod_launcher_reaches_every_rank_and_rank_0_records_it(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, "strategy=horovod", "strategy.num_workers=2", "strategy.timeout_s=30")
    wait_for_a_checkpoint(proc, run_dir, timeout=240)
    out, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, (out + err)[-3000:]
    assert "forwarded to 2 local rank(s)" in err and "Traceback" not in out + err
    assert "interrupted (rank 0)" in err and "interrupted (rank 1)" in err  # both stopped, neither was killed
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and run["resume_command"].endswith(f"hydra.run.dir={run_dir}")


def test_a_launcher_records_the_interruption_when_the_chief_could_not(tmp_path):
    from scaleflow.manifest import atomic_write_json, mark_interrupted

    atomic_write_json(str(tmp_path / "run.json"), {"status": "running", "error": None})
    mark_interrupted(str(tmp_path), "SIGTERM forwarded", "python -m scaleflow hydra.run.dir=x")
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "interrupted" and run["resume_command"].endswith("hydra.run.dir=x")
    atomic_write_json(str(tmp_path / "run.json"), {"status": "ok"})
    mark_interrupted(str(tmp_path), "too late", None)  # a finished run is left as it is
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "ok"
