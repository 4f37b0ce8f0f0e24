"""The local cluster launcher, TF_CONFIG and Slurm handling, with real processes but (almost) no TensorFlow.

Workers here are tiny Python programs that behave like TensorFlow workers do: announce that they
joined, fail, or block and ignore SIGTERM (as a worker waiting for a missing peer does).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time

import pytest

from scaleflow.cluster import LocalCluster, WorkerFailed, free_ports
from scaleflow.cluster.logs import READY
from scaleflow.cluster.tf_config import local_tf_config, read
from scaleflow.errors import ConfigError

IGNORE_TERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)"


def worker(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def cluster(codes: list[str], **kwargs) -> tuple[LocalCluster, io.StringIO]:
    out = io.StringIO()
    kwargs = {"startup_timeout_s": 20, "finish_timeout_s": 20, "peer_grace_s": 1, "poll_s": 0.05, **kwargs}
    return LocalCluster([worker(c) for c in codes], [dict(os.environ)] * len(codes), out=out, **kwargs), out


def test_every_worker_finishing_is_success_and_output_is_prefixed_by_rank(tmp_path):
    c, out = cluster([f"print({READY!r}); print('hello from 0')", f"print({READY!r}); print('hello from 1')"],
                     log_dir=str(tmp_path))
    assert c.run() == 0
    text = out.getvalue()
    assert "[worker-0] hello from 0" in text and "[worker-1] hello from 1" in text
    assert "hello from 1" in (tmp_path / "worker-1.out").read_text()
    assert int((tmp_path / "worker-0.pid").read_text()) == c.pids[0]


def test_a_dead_worker_ends_the_job_naming_it_with_its_last_lines_and_nothing_is_left_behind():
    blocked = f"{IGNORE_TERM}; print({READY!r}, flush=True); import time; time.sleep(600)"
    dies = f"print({READY!r}, flush=True); print('loading shard 7', flush=True); import sys; sys.exit(3)"
    c, _ = cluster([blocked, dies])
    started = time.monotonic()
    with pytest.raises(WorkerFailed) as info:
        c.run()
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert info.value.rank == 1 and "worker-1" in message and "exited with status 3" in message
    assert "loading shard 7" in message
    assert not any(alive(pid) for pid in c.pids)


def test_startup_watchdog_sigkills_a_worker_whose_peer_never_joins():
    waiting = f"{IGNORE_TERM}; import time; time.sleep(600)"  # never announces READY, ignores SIGTERM
    c, _ = cluster([f"print({READY!r}, flush=True); {waiting}", waiting], startup_timeout_s=2)
    with pytest.raises(WorkerFailed) as info:
        c.run()
    assert "startup watchdog" in str(info.value) and "worker-1 did not join" in str(info.value)
    assert not any(alive(pid) for pid in c.pids)


def test_a_worker_that_does_not_finish_after_the_others_is_killed():
    c, _ = cluster([f"print({READY!r})", f"print({READY!r}, flush=True); {IGNORE_TERM}; import time; time.sleep(600)"],
                   finish_timeout_s=1)
    with pytest.raises(WorkerFailed, match="worker-1 did not finish"):
        c.run()
    assert not any(alive(pid) for pid in c.pids)


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = free_ports(4)
    assert len(set(ports)) == 4
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_tf_config_round_trip_and_chief_is_rank_zero():
    text = local_tf_config([1111, 2222], 1)
    info = read({"TF_CONFIG": text})
    assert (info.num_workers, info.rank) == (2, 1)
    assert info.addresses == ("127.0.0.1:1111", "127.0.0.1:2222")
    chief = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}})
    assert read({"TF_CONFIG": chief}).rank == 1


@pytest.mark.parametrize("text", ["", "not json", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
                                  '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}'])
def test_a_missing_or_bad_tf_config_is_a_clear_config_error(text):
    with pytest.raises(ConfigError, match="TF_CONFIG|strategy.cluster"):
        read({"TF_CONFIG": text} if text else {})


def test_worker_command_shares_the_run_dir_but_not_hydra_outputs(tmp_path):
    from scaleflow.strategies.multi_worker import worker_command

    cmd = worker_command(["strategy=multi_worker", "hydra.run.dir=elsewhere", "trainer.epochs=1"], str(tmp_path), 1)
    assert cmd[1:3] == ["-m", "scaleflow"]
    assert "hydra.run.dir=elsewhere" not in cmd and f"hydra.run.dir={tmp_path}" in cmd
    assert {"hydra.output_subdir=null", "hydra.job.name=worker-1", "trainer.epochs=1"} <= set(cmd)


def test_backups_at_different_epochs_are_aligned_to_the_most_advanced(tmp_path):
    from scaleflow.training.setup import align_backups, backup_dir, completed_epochs

    for rank, epoch in ((0, 2), (1, 1)):
        os.makedirs(backup_dir(str(tmp_path), rank))
        with open(os.path.join(backup_dir(str(tmp_path), rank), "training_metadata.json"), "w") as f:
            json.dump({"epoch": epoch}, f)
    align_backups(str(tmp_path))
    assert [completed_epochs(backup_dir(str(tmp_path), r)) for r in (0, 1)] == [2, 2]


def test_a_backup_ahead_of_run_json_history_is_not_resumed_from(tmp_path):
    """The writer records an epoch's metrics before its own backup; a kill after another worker's save
    but before the writer's record must not resume past run.json's history (it lost that epoch's row)."""
    from scaleflow.training.setup import align_backups, backup_dir, completed_epochs

    for rank, epoch in ((0, 2), (1, 3)):
        os.makedirs(backup_dir(str(tmp_path), rank))
        with open(os.path.join(backup_dir(str(tmp_path), rank), "training_metadata.json"), "w") as f:
            json.dump({"epoch": epoch}, f)
    with open(tmp_path / "run.json", "w") as f:
        json.dump({"epochs_completed": 2, "metrics": {"history": {"loss": [0.9, 0.5]}}}, f)
    align_backups(str(tmp_path))
    assert [completed_epochs(backup_dir(str(tmp_path), r)) for r in (0, 1)] == [2, 2]


def test_global_batch_must_split_evenly_between_workers():
    from conftest import compose

    with pytest.raises(ConfigError, match="data.batch_size"):
        compose("strategy=multi_worker", "strategy.num_workers=3", "data.batch_size=64")


def test_slurm_cluster_resolves_every_task_on_cpu(monkeypatch):
    """strategy.cluster=slurm through TensorFlow's SlurmClusterResolver (which alone finds no task
    without GPUs); this one test imports TensorFlow."""
    from scaleflow.cluster.tf_config import cluster_resolver

    for key, value in {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "node[1-2]",
                       "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SCALEFLOW_SLURM_PORT_BASE": "9000"}.items():
        monkeypatch.setenv(key, value)
    resolver = cluster_resolver("slurm", "cpu")
    assert resolver.cluster_spec().as_dict() == {"worker": ["node1:9000", "node2:9000"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)


def test_slurm_outside_slurm_is_a_clear_error(monkeypatch):
    from scaleflow.cluster.tf_config import cluster_resolver
    from scaleflow.errors import ScaleflowError

    monkeypatch.delenv("SLURM_PROCID", raising=False)
    with pytest.raises(ScaleflowError, match="SLURM_PROCID is not set"):
        cluster_resolver("slurm", "cpu")


def test_stall_watchdog_sigkills_a_process_that_stops_making_progress_but_not_one_that_ticks():
    import subprocess

    from scaleflow.cluster.join import StallWatchdog

    code = ("from scaleflow.cluster.join import StallWatchdog; import time; "
            "w = StallWatchdog(1, 'no step for 1 s', first_timeout_s=2).start(); time.sleep(30)")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == -9 and "no step for 1 s" in result.stderr
    assert 1.5 < time.monotonic() - started < 20  # the first allowance (2 s) applied, not 30 s of sleep
    watchdog = StallWatchdog(1, "should not fire").start()
    for _ in range(5):
        time.sleep(0.6)
        watchdog.tick()
    watchdog.stop()  # still alive: we got here
