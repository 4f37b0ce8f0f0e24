"""strategy=multi_worker end to end: real worker processes on 127.0.0.1, real TensorFlow training.

Each test starts a real cluster (10-40 s on 2 cores), so there are few of them and they are slow-marked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cli

pytestmark = pytest.mark.slow

SMALL = ["model.hidden_units=[16]", "strategy.timeout_s=30"]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(run_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((run_dir / "workers").glob("worker-*.pid"))]


def completed_epochs(run_dir: Path, rank: int) -> int:
    try:
        return int(json.loads((run_dir / "backup" / f"worker-{rank}" / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def test_kill_9_a_worker_mid_epoch_fails_cleanly_and_the_same_command_resumes_every_worker(tmp_path):
    run_dir = tmp_path / "run"
    args = ["strategy=multi_worker", "strategy.num_workers=2", f"hydra.run.dir={run_dir}", "trainer.epochs=3",
            "data.num_examples=5120", *SMALL]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "scaleflow", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while min(completed_epochs(run_dir, r) for r in (0, 1)) < 1:  # both backed up epoch 1: now in epoch 2
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "epoch 1 never completed"
            time.sleep(0.1)
        pids = worker_pids(run_dir)
        os.kill(pids[1], signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=90)
        ended_after = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ended_after < 60
    assert proc.returncode != 0
    assert "worker-1" in err and "SIGKILL" in err and "last lines of worker-1" in err, err
    assert "[worker-0]" in out and "[worker-1]" in out  # live logs, prefixed by rank
    assert not any(alive(pid) for pid in pids)  # nothing left behind
    assert completed_epochs(run_dir, 0) < 3

    again = cli(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "ok"
    assert manifest["resumed_from_epoch"] >= 1  # every worker resumed, not only the chief (they stay in step)
    assert manifest["strategy"]["num_workers"] == 2 and manifest["strategy"]["num_replicas"] == 2
    assert manifest["config"]["strategy"]["num_workers"] == 2
    assert len(manifest["metrics"]["history"]["loss"]) == 3
    assert manifest["export"]["verified"] and Path(manifest["export"]["path"]).is_dir()
    # One writer per file: the chief exports (and labels it); each worker has its own TensorBoard dir and log.
    assert sorted(p.name for p in (run_dir / "export" / "mlp").iterdir()) == ["1", "labels.json"]
    assert manifest["export"]["promotion"]["decision"] == "stable"
    for rank in (0, 1):
        assert (run_dir / "tensorboard" / f"worker-{rank}").is_dir()
        assert (run_dir / f"worker-{rank}.log").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()  # the launcher's, not clobbered by workers


def test_two_workers_end_with_the_same_weights_as_one_on_the_same_global_batches(tmp_path, train):
    """Sequential sharding gives each of 2 pipelines a different half of the records, so a multi-step
    epoch would see other global batches than 1 pipeline. With exactly one global batch of all 64
    records per epoch (no validation, no shuffling), both runs take the same full-batch SGD steps;
    what differs is only how the gradient is computed (two halves all-reduced vs one batch)."""
    import tensorflow as tf

    same = ["data.num_examples=64", "data.batch_size=64", "data.validation_split=0", "data.shuffle_buffer=0",
            "trainer.optimizer=sgd", "trainer.learning_rate=0.1", "model.dropout=0", "trainer.epochs=5",
            "model.hidden_units=[16]"]
    one = train("strategy=default", *same, run_dir=tmp_path / "one")
    two_dir = tmp_path / "two"
    result = cli("strategy=multi_worker", "strategy.num_workers=2", f"hydra.run.dir={two_dir}", *same,
                 cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    two = json.loads((two_dir / "run.json").read_text())
    assert two["data"]["train"]["steps"] == one["data"]["train"]["steps"] == 1
    # pinned, as multi_worker chooses: the chief (place 0 on this host) on the first half of the cores
    cores = sorted(os.sched_getaffinity(0))
    assert two["tuning"]["threads"]["cpus"] == cores[:max(1, len(cores) // 2)], two["tuning"]["threads"]

    def weights(manifest):
        loaded = tf.saved_model.load(manifest["export"]["path"])
        return {v.name: v.numpy() for v in loaded.variables}

    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    diff = max(float(np.max(np.abs(w1[k] - w2[k]))) for k in w1)
    assert diff <= 1e-5, diff
    initial_loss = one["metrics"]["history"]["loss"][0]
    assert one["metrics"]["final"]["loss"] < initial_loss  # it did train


def test_a_worker_whose_peer_never_joins_ends_itself_within_the_timeout(tmp_path):
    from scaleflow.cluster import free_ports
    from scaleflow.cluster.tf_config import local_tf_config

    env = {"TF_CONFIG": local_tf_config(free_ports(2), 0)}  # worker 1 is never started
    started = time.monotonic()
    result = cli("strategy=multi_worker", "strategy.cluster=env", "strategy.timeout_s=5", f"hydra.run.dir={tmp_path}",
                 "data.num_examples=256", cwd=tmp_path, timeout=120, env=env)
    assert result.returncode == -signal.SIGKILL, result.stdout[-2000:] + result.stderr[-2000:]
    assert "did not all join within 5 s" in result.stderr
    assert time.monotonic() - started < 60
