"""strategy=horovod on a real Horovod (Gloo) build: parity with one process, the full CLI job on two
ranks, kill and resume. Needs Horovod built for this TensorFlow (`make horovod`); without it these
tests skip, unless SCALEFLOW_REQUIRE_HOROVOD=1 (CI) makes a missing build a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import QUICK, REPO, cli

try:  # the plugin and a Horovod built for this TensorFlow
    from scaleflow_horovod import install

    install.check()
    HOROVOD = None
except Exception as e:  # noqa: BLE001 - the reason is the skip message
    HOROVOD = str(e)
if HOROVOD and os.environ.get("SCALEFLOW_REQUIRE_HOROVOD") == "1":
    raise RuntimeError(f"SCALEFLOW_REQUIRE_HOROVOD=1 but {HOROVOD}")
pytestmark = pytest.mark.skipif(HOROVOD is not None, reason=f"no usable Horovod: {HOROVOD}")

HOROVODRUN = [sys.executable, "-c", "from horovod.runner.launch import run_commandline; run_commandline()"]

# Trains the same global batches with N ranks (each on its half of every batch) or with one process
# (the whole batch), through HorovodDistribution's optimizer wrapper and callbacks. Ranks start from
# different random weights on purpose: the broadcast from rank 0 must make them equal.
PARITY_SCRIPT = r'''
import os, sys
import numpy as np
import keras
import horovod.tensorflow as hvd
from scaleflow_horovod.distribution import HorovodDistribution

out = sys.argv[1]
hvd.init()
dist = HorovodDistribution(hvd)
rank, size = dist.worker_index, dist.num_workers
global_batch, steps = 32, 12
rng = np.random.default_rng(7)
x = rng.normal(size=(global_batch * steps, 8)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1).astype("int32")
per_rank = global_batch // size
# Row block `rank` of every global batch: the same global batches, split over the ranks.
xr = x.reshape(steps, global_batch, 8)[:, rank * per_rank:(rank + 1) * per_rank].reshape(-1, 8)
yr = y.reshape(steps, global_batch)[:, rank * per_rank:(rank + 1) * per_rank].reshape(-1)
for name, optimizer in (("adam", keras.optimizers.Adam(0.01)),
                        ("sgd", keras.optimizers.SGD(0.05, momentum=0.9))):
    keras.utils.set_random_seed(100 + rank)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=dist.wrap_optimizer(optimizer), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=4, jit_compile=dist.jit_compile)
    history = model.fit(xr, yr, batch_size=per_rank, epochs=3, shuffle=False, verbose=0,
                        callbacks=dist.callbacks())
    np.savez(os.path.join(out, f"{name}-size{size}-rank{rank}.npz"), *model.get_weights(),
             loss=np.array(history.history["loss"]))
'''


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted((k for k in f.files if k.startswith("arr_")), key=lambda k: int(k[4:]))], \
            f["loss"]


@pytest.mark.slow
def test_two_ranks_match_each_other_and_one_process_on_the_same_global_batches(tmp_path):
    script = tmp_path / "parity.py"
    script.write_text(PARITY_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, check=True, timeout=300)
    two = subprocess.run([*HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", "--start-timeout", "120",
                          sys.executable, str(script), str(tmp_path)], env=env, timeout=300,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    for optimizer in ("adam", "sgd"):
        reference, reference_loss = _weights(tmp_path / f"{optimizer}-size1-rank0.npz")
        rank0, loss0 = _weights(tmp_path / f"{optimizer}-size2-rank0.npz")
        rank1, loss1 = _weights(tmp_path / f"{optimizer}-size2-rank1.npz")
        for a, b in zip(rank0, rank1):
            np.testing.assert_array_equal(a, b)  # every rank holds the same model
        diff = max(float(np.max(np.abs(a - r))) for a, r in zip(rank0, reference))
        assert diff <= 1e-6, f"{optimizer}: 2 ranks differ from 1 process by {diff}"
        np.testing.assert_allclose(loss0, loss1)  # metrics are averaged over ranks
        np.testing.assert_allclose(loss0, reference_loss, rtol=1e-5)


def test_one_rank_trains_in_process_with_jit_off(train):
    manifest = train("strategy=horovod", *QUICK)
    assert manifest["status"] == "ok"
    assert manifest["strategy"]["name"] == "horovod" and manifest["strategy"]["num_workers"] == 1
    assert manifest["export"]["verified"]


@pytest.mark.slow
def test_two_rank_job_killed_mid_training_resumes_and_only_rank_0_writes(tmp_path):
    run_dir = tmp_path / "run"
    args = ["strategy=horovod", "strategy.num_workers=2", "data.num_examples=1024", "model.hidden_units=[16]",
            "trainer.epochs=8", "trainer.verbose=quiet", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    job = subprocess.Popen([sys.executable, "-m", "scaleflow", *args], cwd=tmp_path, env=env,
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = run_dir / "backup" / "worker-0" / "training_metadata.json"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and job.poll() is None:
            if meta.exists() and json.loads(meta.read_text() or "{}").get("epoch", -1) >= 2:
                break
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before it could be killed"
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the launcher and horovodrun, as a user's kill -9 would
        job.wait(timeout=30)
    _wait_for_ranks_to_end(run_dir)  # ranks run in sessions of their own and watch the launcher
    # Rank 0 may still record the failure when its peer goes first, or the SIGTERM its launcher's death
    # brings as `interrupted`; either way the run did not finish.
    assert json.loads((run_dir / "run.json").read_text())["status"] in ("running", "failed", "interrupted")

    result = cli(*args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "ok" and manifest["resumed_from_epoch"] >= 2
    assert len(manifest["metrics"]["history"]["loss"]) == 8
    assert manifest["strategy"] == {**manifest["strategy"], "name": "horovod", "num_workers": 2,
                                    "num_pipelines": 2, "worker_index": 0}
    train = manifest["data"]["train"]
    assert manifest["data"]["num_pipelines"] == 2 and train["steps"] > 0
    # Only rank 0 exports (one version, labelled stable); each rank logs its own TensorBoard events.
    assert sorted(os.listdir(run_dir / "export" / "mlp")) == ["1", "labels.json"]
    assert sorted(os.listdir(run_dir / "tensorboard")) == ["worker-0", "worker-1"]
    assert manifest["export"]["verified"]


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_job_with_an_error_not_a_hang(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    job = subprocess.Popen([sys.executable, "-m", "scaleflow", "strategy=horovod", "strategy.num_workers=2",
                            "strategy.timeout_s=30", "data.num_examples=1024", "trainer.epochs=500",
                            "trainer.verbose=quiet", "export=none", f"hydra.run.dir={run_dir}"],
                           cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "backup" / "worker-1" / "training_metadata.json").exists():
            assert time.monotonic() < deadline and job.poll() is None, "rank 1 never completed an epoch"
            time.sleep(0.2)
        os.kill(_rank_pids(run_dir)["1"], signal.SIGKILL)  # rank 1 dies mid-training
        output, _ = job.communicate(timeout=120)  # the job must end by itself
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 1, output[-3000:]
    assert "strategy=horovod: the job failed" in output or "strategy=horovod: rank 1 " in output
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    _wait_for_ranks_to_end(run_dir)


def _rank_pids(run_dir) -> dict:
    """{HOROVOD_RANK: pid} of this job's live ranks (their command line names the run dir)."""
    ranks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            if "scaleflow_horovod.worker" not in cmdline or str(run_dir) not in cmdline:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = dict(v.split("=", 1) for v in f.read().decode(errors="replace").split("\0") if "=" in v)
        except OSError:
            continue
        ranks[environ.get("HOROVOD_RANK", "?")] = int(pid)
    return ranks


def _wait_for_ranks_to_end(run_dir, timeout_s: float = 30.0) -> None:
    """Until no process of this job is left; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while _rank_pids(run_dir):
        if time.monotonic() > deadline:
            raise AssertionError(f"ranks {_rank_pids(run_dir)} outlived their job by {timeout_s}s")
        time.sleep(0.2)
