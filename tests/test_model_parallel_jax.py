"""strategy=model_parallel and strategy=hybrid really train on Keras' JAX backend: split variables
(read from the JAX arrays' shardings), the same weights as one device, and everything a data-parallel
run leaves behind (resume after kill -9, a verified SavedModel without device strings, TensorBoard
scalars and a JAX profiler trace, run.json's mesh, layout and bytes per device).

JAX runs are subprocesses (the Keras backend is fixed when Keras is first imported): two of them,
each checking several things."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
TOLERANCE = 1e-5


def test_model_parallel_over_2_and_4_devices_and_hybrid_2x2_end_with_one_device_s_weights(tmp_path):
    """One JAX process (4 XLA host devices) runs scaleflow's training under meshes 1x1 (one device:
    the reference), 1x2, 1x4 and 2x2 on the same config: Adam, no dropout, the same global batches;
    then two layout rules that cannot apply."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "SCALEFLOW_JAX_PROCESS": "1", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, str(TESTS / "jax_mesh_probe.py"), str(tmp_path), "1x1", "1x2", "1x4", "2x2"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=TESTS.parent)
    lines = [line for line in out.stdout.splitlines() if line.startswith("PROBE ")]
    assert out.returncode == 0 and lines, (out.stdout + out.stderr)[-4000:]
    probe = json.loads(lines[-1][len("PROBE "):])
    report = probe["meshes"]
    for mesh, (data, model) in {"1x2": (1, 2), "1x4": (1, 4), "2x2": (2, 2)}.items():
        r = report[mesh]
        assert r["status"] == "ok" and r["mesh"] == [data, model]
        assert r["max_abs_diff"] <= TOLERANCE, (mesh, r["max_abs_diff"])
        assert r["moved"] > 0.1  # the weights trained (an all-zero comparison would prove nothing)
        assert r["num_replicas"] == data
        # The MLP's default rules split its hidden kernels' outputs; the task's head stays whole.
        assert r["sharding"]["dense_0/kernel"] == [None, "model"] == r["sharding"]["dense_1/kernel"]
        assert r["sharding"]["scores/kernel"] == [None, None]
        per_device = r["parameter_bytes_per_device"]
        assert len(per_device) == data * model and len(set(per_device.values())) == 1
        held = sum(math.prod(shape) * 4 // (model if "model" in r["sharding"][path] else 1)
                   for path, shape in r["shapes"].items())  # float32: a split variable's 1/M, the rest whole
        assert max(per_device.values()) == held < r["parameter_bytes_replicated"]
        assert max(r["optimizer_bytes_per_device"].values()) < 2 * r["parameter_bytes_replicated"]  # slots split too
    assert report["1x1"]["parameter_bytes_per_device"] == {"cpu:0": report["1x1"]["parameter_bytes_replicated"]}

    # A rule that matches no variable, or splits a dimension the axis does not divide: exit 2 naming
    # the rule, once the model is built and before the first step (Keras would replicate silently).
    unmatched, indivisible = probe["refused"]["unmatched"], probe["refused"]["indivisible"]
    assert unmatched["key"] == "strategy.layout.dense_9/kernel" and "matches none of: dense_0/kernel" in unmatched["message"]
    assert indivisible["key"] == "strategy.layout.scores/kernel" and "has 10, which the 'model' axis (4 devices) " \
        "does not divide" in indivisible["message"]
    assert unmatched["status"] == indivisible["status"] == "failed" and not unmatched["epochs"] and not indivisible["epochs"]


EPOCHS = 5


def command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "scaleflow", "strategy=hybrid", "strategy.mesh=[2,2]", "hardware.logical_devices=4",
            f"hydra.run.dir={run_dir}", "data.num_examples=2048", "data.batch_size=32", f"trainer.epochs={EPOCHS}",
            "trainer.steps_per_execution=1", "model.hidden_units=[64,32]", "profile=tensorboard",
            "profile.batches=[3,5]", "export.promote=never"]


def serving_device_strings(export_dir: str) -> list[str]:
    """Device strings of the serving graph: every function except TensorFlow's own checkpoint
    save/restore functions (which every SavedModel pins to the host CPU)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(Path(export_dir, "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    return [f"{f.signature.name}/{n.name}: {n.device}" for f in graph.library.function for n in f.node_def
            if n.device and not f.signature.name.startswith(("__inference__traced_save", "__inference__traced_restore"))]


def serving_platforms(export_dir: str) -> set[str]:
    """The platforms the exported StableHLO (XlaCallModule ops) was lowered for."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(Path(export_dir, "saved_model.pb").read_bytes())
    return {p.decode() if isinstance(p, bytes) else p for f in saved.meta_graphs[0].graph_def.library.function
            for n in f.node_def if n.op == "XlaCallModule" for p in n.attr["platforms"].list.s}


def test_hybrid_run_resumes_after_kill_9_and_leaves_a_verified_export_tensorboard_and_a_jax_trace(tmp_path, tf):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    meta = run_dir / "backup" / "worker-0" / "training_metadata.json"
    first = subprocess.Popen(command(run_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline, completed = time.time() + 300, 0
    while time.time() < deadline and first.poll() is None:
        try:
            completed = json.loads(meta.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            completed = 0
        if completed >= 1:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the run finished before it could be killed: make epochs longer\n" + \
        first.stdout.read().decode()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the launcher and the JAX training process
    first.wait(timeout=30)
    completed = json.loads(meta.read_text())["epoch"]
    assert 1 <= completed < EPOCHS and json.loads((run_dir / "run.json").read_text())["status"] == "running"

    second = subprocess.run(command(run_dir), env=env, capture_output=True, text=True, timeout=600)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert f"resuming from epoch {completed}/{EPOCHS}" in log and "Traceback" not in log
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "ok" and run["resumed_from_epoch"] == completed
    assert len(run["metrics"]["history"]["loss"]) == EPOCHS

    # run.json: the mesh, the layout each variable follows, what every device holds
    s = run["strategy"]
    assert s["name"] == "hybrid" and s["backend"] == "jax" and s["num_replicas"] == 2
    assert s["mesh"]["shape"] == [2, 2] and s["mesh"]["axes"] == ["batch", "model"] and len(s["mesh"]["devices"]) == 4
    assert s["mesh"]["batch_layout"] == ["batch", None]  # every global batch split over the data axis
    assert s["layout"]["variables"]["dense_0/kernel"] == {"shape": [32, 64], "sharding": [None, "model"],
                                                          "rule": "dense_0/kernel", "from": "model default"}
    assert set(s["parameter_bytes_per_device"]) == set(s["mesh"]["devices"])
    assert max(s["parameter_bytes_per_device"].values()) < s["parameter_bytes_replicated"]

    # the export: TF Serving's layout, verified, sealed, no device strings in the serving graph
    from scaleflow.export.integrity import verify_export

    export = run["export"]
    assert export["verified"] and export["max_abs_diff"] <= 1e-4
    assert export["dir"] == str(run_dir / "export" / "mlp" / "1")  # <export.dir>/<export.name>/<version>
    assert verify_export(export["dir"]).ok
    assert serving_device_strings(export["dir"]) == []
    loaded = tf.saved_model.load(export["dir"])
    assert set(loaded.signatures) == {"serve", "serving_default"}
    assert serving_platforms(export["dir"]) == {"CPU", "CUDA", "TPU"}  # serves on any TF Serving device

    # TensorBoard: epoch scalars, and the JAX profiler's trace where the Profile tab reads it
    events = list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    tags = {v.tag for e in events for record in tf.compat.v1.train.summary_iterator(str(e)) for v in record.summary.value}
    assert "epoch_loss" in tags
    traces = list((run_dir / "tensorboard" / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert traces and run["profile"]["profiler"] == "jax"
