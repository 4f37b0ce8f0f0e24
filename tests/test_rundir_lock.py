"""One run at a time per run dir: a second run in a locked `hydra.run.dir` exits 2 at once, naming
the holder's pid, before Hydra writes anything; a dead holder never leaves the dir locked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scaleflow.rundir_lock import RunDirBusy, RunDirLock, job_rank
from tests.conftest import cli


def test_second_run_in_a_locked_run_dir_exits_2_naming_the_holder_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("first run's config\n")
    (run_dir / "run.json").write_text('{"status": "running"}\n')
    before = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*"))
    holder = RunDirLock(str(run_dir)).acquire()
    try:
        result = cli(f"hydra.run.dir={run_dir}", "trainer.seed=7", timeout=60)
    finally:
        holder.release()
    assert result.returncode == 2, result.stderr
    assert f"pid {os.getpid()}" in result.stderr and "hydra.run.dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "first run's config\n"
    assert (run_dir / "run.json").read_text() == '{"status": "running"}\n'
    after = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")}
    assert after - {".scaleflow.lock"} == set(before)  # no log, no .hydra/ files


def test_a_killed_holder_leaves_the_run_dir_unlocked(tmp_path):
    code = ("import sys, time; from scaleflow.rundir_lock import acquire; acquire(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            RunDirLock(str(tmp_path)).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
    lock = RunDirLock(str(tmp_path)).acquire()  # the OS released it with the process
    assert json.loads((tmp_path / ".scaleflow.lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_the_lock_is_taken_after_validation_and_pins_hydra_to_the_locked_dir(tmp_path):
    # A config error still wins (exit 2 naming the key), and a normal config-only job runs in the dir.
    bad = cli(f"hydra.run.dir={tmp_path / 'run'}", "data.shard=hsah", timeout=60)
    assert bad.returncode == 2 and "data.shard" in bad.stderr
    ok = cli(f"hydra.run.dir={tmp_path / 'run'}", "mode=plan", timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists() and (tmp_path / "run" / "plan.json").exists()


def test_processes_of_one_job_lock_their_rank_and_launched_workers_none():
    from omegaconf import OmegaConf

    def strategy(name):
        return OmegaConf.create({"strategy": {"name": name}})

    assert job_rank(strategy("default"), {}) == 0
    # Each strategy reads its own environment (Strategy.process_rank); job_rank knows none of them.
    assert job_rank(strategy("multi_worker"), {"SCALEFLOW_CLUSTER_WORKER": "1"}) is None  # under its launcher's lock
    assert job_rank(strategy("horovod"), {"HOROVOD_RANK": "3"}) == 3
    tf_config = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    assert job_rank(strategy("multi_worker"), {"TF_CONFIG": json.dumps(tf_config)}) == 1
    assert job_rank(strategy("default"), {"HOROVOD_RANK": "3"}) == 0  # not a job of this strategy
    assert job_rank(strategy("default"), {"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}) == 2
    assert job_rank(strategy("default"), {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == 0
    assert RunDirLock("/x", 2).path.endswith(".scaleflow-rank2.lock")
