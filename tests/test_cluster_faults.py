"""Faults of a running cluster are pinned on the worker that caused them, and run.json says so.

A hung worker (SIGSTOP) makes every peer block in the next collective; with strategy.timeout_s=5
their step watchdogs fire together, and the healthy chief used to be blamed while run.json stayed
`running`. Multi-process tests: slow-marked and kept short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaleflow.cluster import heartbeat

LONG_RUN = ["trainer.epochs=200", "data.num_examples=2048", "model.hidden_units=[8]", "strategy.timeout_s=5",
            "export=none", "data.validation_split=0"]


def steps(run_dir: Path, rank: int) -> int:
    beat = heartbeat.read(str(run_dir / "workers"), rank)
    return beat.steps if beat else 0


def start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scaleflow", *args, f"hydra.run.dir={run_dir}", *LONG_RUN],
                            cwd=run_dir.parent, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_worker_once_training(proc, run_dir: Path, rank: int, pid_of) -> None:
    deadline = time.monotonic() + 180
    while min(steps(run_dir, r) for r in (0, 1)) < 5:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    os.kill(pid_of(rank), signal.SIGSTOP)


def horovod_missing() -> str | None:
    try:
        from scaleflow_horovod import install

        install.check()
        return None
    except Exception as e:  # noqa: BLE001 - the reason is the skip message
        return str(e)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["multi_worker", "horovod"])
def test_a_stopped_worker_is_named_and_run_json_says_failed(tmp_path, strategy):
    if strategy == "horovod" and horovod_missing():
        pytest.skip(f"no usable Horovod: {horovod_missing()}")
    run_dir = tmp_path / "run"
    proc = start(run_dir, f"strategy={strategy}", "strategy.num_workers=2")
    pid_of = lambda r: heartbeat.read(str(run_dir / "workers"), r).pid  # noqa: E731
    try:
        stop_worker_once_training(proc, run_dir, 1, pid_of)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    first = next(line for line in err.splitlines() if line.startswith("scaleflow: error:"))
    named = "worker-1" if strategy == "multi_worker" else "rank 1"
    assert named in first and "stopped" in first and "worker-0 (pid" not in first, err[-3000:]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "failed" and named in manifest["error"], manifest["error"]


def test_heartbeats_name_the_worker_that_fell_silent_first(tmp_path):
    now = time.time()
    for rank, (t, n) in enumerate([(now, 40), (now - 5, 40), (now - 0.2, 40)]):
        (tmp_path / f"heartbeat-{rank}").write_text(f"{t:.3f} {n} 999999999\n")
    rank, why = heartbeat.suspect(str(tmp_path), range(3))
    assert rank == 1 and "stopped making progress" in why
    (tmp_path / "heartbeat-1").write_text(f"{now:.3f} 38 999999999\n")  # all beating: the one behind
    assert heartbeat.suspect(str(tmp_path), range(3))[0] == 1
    (tmp_path / "heartbeat-1").write_text(f"{now:.3f} 40 999999999\n")  # nothing singles one out
    assert heartbeat.suspect(str(tmp_path), range(3)) is None
    assert heartbeat.suspect(str(tmp_path), range(3), started_after=now + 10) is None  # a previous attempt's


def test_a_stopped_process_is_named_as_stopped(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        time.sleep(0.2)
        now = time.time()
        (tmp_path / "heartbeat-0").write_text(f"{now:.3f} 10 {os.getpid()}\n")
        (tmp_path / "heartbeat-1").write_text(f"{now:.3f} 10 {sleeper.pid}\n")
        rank, why = heartbeat.suspect(str(tmp_path), range(2))
        assert rank == 1 and "stopped (process state T" in why
    finally:
        sleeper.kill()
        sleeper.wait()
