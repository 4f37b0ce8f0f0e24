"""strategy=pipeline: the model cut into stages over devices (GPipe) on the TensorFlow backend.

It trains to the same weights as one device on the same global batches, alone and inside mirrored
(replicas x stages); each stage's variables, Adam slots and backward ops are on its device (asserted
from the variables and the traced training step, not assumed); it has everything a data-parallel run
has (run.json, TensorBoard, a verified export without device strings, resume after kill -9); and
bad input is exit 2 before TensorFlow, naming the key.
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

from conftest import cli, compose
from pipeline_probe import (OVERRIDES, backward_op_devices, export_weights, max_abs_diff, placed_model,
                            predict_op_devices, slot_devices, variable_devices)
from scaleflow.errors import ConfigError
from scaleflow.testing import StrategyTestSuite

PIPELINE = ["strategy=pipeline", "strategy.stages=2", "strategy.micro_batches=4", "hardware.logical_devices=2"]
HERE = Path(__file__).resolve().parent


class TestPipeline(StrategyTestSuite):
    """The contract every strategy meets (topology, parallelism, batch rule, plan, shards, trains)."""

    strategy = "pipeline"
    overrides = ("hardware.logical_devices=2", "model.hidden_units=[16,16]")
    trains = False  # test_two_stages_four_micro_batches_... trains it


def test_each_replica_s_stages_are_on_the_devices_after_its_first_from_the_config_alone():
    from scaleflow.planning.topology import figures
    from scaleflow.strategies.pipeline import Pipeline, stage_device

    assert stage_device("/job:worker/replica:0/task:1/device:CPU:0", 1) == "/job:worker/replica:0/task:1/device:CPU:1"
    assert stage_device("/device:GPU:2", 1) == "/device:GPU:3"
    for overrides, data in [((), 1), (("strategy.data_parallel=mirrored", "hardware.logical_devices=4"), 2),
                            (("strategy.data_parallel=multi_worker", "strategy.num_workers=2"), 2)]:
        cfg = compose(*PIPELINE, *overrides)
        t, p = Pipeline.topology(cfg, figures(cfg)), Pipeline.parallelism(cfg, figures(cfg))
        assert (t.replicas, t.devices_per_replica) == (data, 2)
        assert (p.data, p.model, p.stages, p.micro_batches, p.bubble) == (data, 1, 2, 4, 1 / 5)


# ------------------------------------------------------------------------------------ exactness
@pytest.mark.integration
def test_two_stages_four_micro_batches_end_with_the_weights_of_one_device(train, tmp_path):
    train("strategy=default", *OVERRIDES, run_dir=tmp_path / "one")
    run = train(*PIPELINE, *OVERRIDES, "profile=tensorboard", "profile.batches=[2,3]", run_dir=tmp_path / "pipe")
    assert run["status"] == "ok"
    assert max_abs_diff(export_weights(tmp_path / "one"), export_weights(tmp_path / "pipe")) <= 1e-5
    # GPipe's re-materialisation (strategy.recompute=true) changes memory, not the result.
    recomputed = train(*PIPELINE, "strategy.recompute=true", *OVERRIDES, "export.promote=never",
                       run_dir=tmp_path / "recompute")
    assert recomputed["strategy"]["recompute"] is True
    assert max_abs_diff(export_weights(tmp_path / "one"), export_weights(tmp_path / "recompute")) <= 1e-5

    # run.json says how the step was split and where each stage ran.
    s = run["strategy"]
    assert (s["name"], s["stages"], s["micro_batches"], s["cut_points"]) == ("pipeline", 2, 4, ["dense_0"])
    assert [[d.split("device:")[-1] for d in r] for r in s["stage_devices"]] == [["CPU:0", "CPU:1"]]
    # A verified SavedModel in TF Serving's layout whose graph names no stage device.
    export = Path(run["export"]["dir"])
    assert run["export"]["verified"] and export.name == "1" and (export / "saved_model.pb").exists()
    assert stage_devices_in_saved_model(export / "saved_model.pb") == set()
    # TensorBoard scalars and the profile, as in a data-parallel run.
    logs = tmp_path / "pipe" / "tensorboard"
    assert list((logs / "train").glob("events.out.tfevents.*"))
    assert list((logs / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))


def stage_devices_in_saved_model(path: Path) -> set:
    """Devices named by the SavedModel's nodes, besides TensorFlow's own checkpoint save/restore
    functions (which every SavedModel pins to the host CPU)."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    model.ParseFromString(path.read_bytes())
    found = set()
    for graph in model.meta_graphs:
        found |= {n.device for n in graph.graph_def.node if n.device and n.op not in ("Const",)}
        for f in graph.graph_def.library.function:
            if "traced_save" in f.signature.name or "traced_restore" in f.signature.name:
                continue
            found |= {n.device for n in f.node_def if n.device}
        for node in graph.object_graph_def.nodes:
            if node.WhichOneof("kind") == "variable" and node.variable.device:
                found.add(node.variable.device)
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_inside_mirrored_two_replicas_by_two_stages_end_with_the_weights_of_one_device(tmp_path):
    """4 logical CPUs (the session has 2): in its own process."""
    probe = subprocess.run([sys.executable, str(HERE / "pipeline_probe.py"), str(tmp_path)], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["status"] == ["ok", "ok"] and result["max_abs_diff"] <= 1e-5
    s = result["strategy"]
    assert (s["num_replicas"], s["stages"], s["data_parallel"]) == (2, 2, "mirrored")
    assert [[d.split("device:")[-1] for d in r] for r in s["stage_devices"]] == [["CPU:0", "CPU:1"],
                                                                                  ["CPU:2", "CPU:3"]]
    # Variables stay mirrored on each replica's first device; each replica's stages compute (and
    # run their backward pass) on that replica's devices.
    assert set(map(tuple, result["variables"].values())) == {("CPU:0", "CPU:2")}
    assert result["backward"] == {"0/dense_0": ["CPU:0"], "0/dense_1": ["CPU:1"], "0/scores": ["CPU:1"],
                                  "1/dense_0": ["CPU:2"], "1/dense_1": ["CPU:3"], "1/scores": ["CPU:3"]}
    assert result["export"]["verified"]


# ------------------------------------------------------------------------------------ placement
def test_each_stage_s_variables_adam_slots_and_backward_ops_are_on_its_device(tf):
    distribution, model = placed_model(*PIPELINE, "model.hidden_units=[16,16,16]")
    assert distribution.jit_compile is False  # XLA refuses variables on another device
    assert distribution.cuts == ["dense_1"]  # 2 cut points (after dense_0, dense_1): the middle one
    stage = {"dense_0": "CPU:0", "dense_1": "CPU:0", "dense_2": "CPU:1", "scores": "CPU:1"}
    assert variable_devices(model) == {f"{layer}/{w}": [device] for layer, device in stage.items()
                                       for w in ("kernel", "bias")}
    slots = slot_devices(model)
    assert len(slots) == 16 and all(devices == [stage[path.split("/")[1].rsplit("_", 2)[0]]]
                                    for path, devices in slots.items())
    assert backward_op_devices(distribution, model, batch=16) == {f"0/{layer}": [device]
                                                                   for layer, device in stage.items()}
    assert predict_op_devices(model, batch=16) == {layer: [device] for layer, device in stage.items()}

    # strategy.recompute=true: the stages before the last recompute their forward pass for the
    # backward one (tf.custom_gradient), on their own device too.
    distribution, model = placed_model(*PIPELINE, "model.hidden_units=[16,16,16]", "strategy.recompute=true")
    assert backward_op_devices(distribution, model, batch=16) == {f"0/{layer}": [device]
                                                                   for layer, device in stage.items()}


def test_recompute_refuses_stages_whose_recomputation_would_differ(tf):
    from scaleflow.errors import ScaleflowError

    with pytest.raises(ConfigError) as e:  # new dropout masks: a gradient of another forward pass
        compose(*PIPELINE, "strategy.recompute=true", "model.dropout=0.1")
    assert (e.value.key, e.value.value) == ("strategy.recompute", True)
    with pytest.raises(ScaleflowError, match="BatchNormalization's statistics twice"):
        placed_model(*PIPELINE, "strategy.recompute=true", "model.hidden_units=[16,16]", "model.batch_norm=true")


@pytest.mark.parametrize("overrides, cuts", [
    (["model=mlp", "model.hidden_units=[8,8,8]", "model.batch_norm=true", "model.dropout=0.1"],
     ["block_0_dropout", "block_1_dropout"]),
    (["model=cnn", "model.filters=[4,4]", "model.dense_units=8"], ["block_0", "block_1", "dense"]),
    (["model=resnet", "model.width=4", "model.stages=2", "model.depth=1"], ["block_0_0", "block_1_0"]),
])
def test_the_built_ins_cut_between_blocks_and_their_stages_chained_are_the_model(tf, overrides, cuts):
    import numpy as np

    from scaleflow import registry
    from scaleflow.models.base import InputSpec
    from scaleflow.strategies.pipeline import split

    cfg = compose(*overrides)
    plugin = registry.get("model", cfg.model.name)()
    assert plugin.cut_points(cfg.model) == cuts  # from the config alone
    spec = InputSpec((16,), 3)
    model = plugin.build(cfg.model, spec)
    stages = split(model, cuts)
    x = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
    y = x
    for stage in stages:
        y = stage(y, training=False)
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x, training=False)), atol=1e-6)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("overrides, key, value, allowed", [
    (["model.hidden_units=[16,16]", "strategy.stages=3"], "strategy.stages", 3, "at most 2"),
    (["data.batch_size=60", "strategy.micro_batches=8"], "strategy.micro_batches", 8, "a divisor of the per-replica batch 60"),
    (["strategy.data_parallel=mirrored", "strategy.replicas=2", "data.batch_size=64"], "hardware.logical_devices", 2,
     "at least 4 (strategy.stages=2 x 2 replica(s)"),
    (["strategy.cuts=[dense_9]"], "strategy.cuts", ["dense_9"], "1 of ['dense_0'] in model order"),
    (["trainer.jit_compile=true"], "trainer.jit_compile", True, "'auto' or false"),
    (["strategy.replicas=2"], "strategy.replicas", 2, "null unless strategy.data_parallel=mirrored"),
])
def test_bad_input_is_a_config_error_naming_key_value_and_what_is_allowed(overrides, key, value, allowed):
    with pytest.raises(ConfigError) as e:
        compose(*PIPELINE, *overrides)
    assert (e.value.key, e.value.value) == (key, value) and allowed in e.value.allowed


def test_a_model_that_declares_no_cut_points_cannot_be_pipelined():
    from scaleflow.models.base import Model

    assert Model.cut_points(None, None) == []
    with pytest.raises(ConfigError) as e:  # one hidden layer: the head stays with it, nothing to cut
        compose(*PIPELINE, "model.hidden_units=[16]")
    assert e.value.key == "strategy.stages" and "at most 1" in e.value.allowed


@pytest.mark.slow
def test_bad_input_exits_2_before_tensorflow_with_one_line(tmp_path):
    result = cli(*PIPELINE, "model.hidden_units=[16,16]", "strategy.stages=3", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "strategy.stages=3" in result.stderr and "at most 2" in result.stderr and "after dense_0" in result.stderr
    assert not (tmp_path / "run.json").exists()  # nothing started


# --------------------------------------------------------------------------------------- resume
@pytest.mark.integration
@pytest.mark.slow
def test_killed_with_sigkill_it_resumes_to_the_weights_of_an_uninterrupted_run(train, tmp_path):
    epochs = 6
    overrides = [*PIPELINE, "data.num_examples=768", f"trainer.epochs={epochs}", "model.hidden_units=[32,32]",
                 "trainer.steps_per_execution=1", "data.validation_split=0"]
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "scaleflow", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    meta = run_dir / "backup" / "worker-0" / "training_metadata.json"
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    completed, deadline = 0, time.time() + 180
    while time.time() < deadline and first.poll() is None and completed < 2:
        try:
            completed = json.loads(meta.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.01)
    assert first.poll() is None, "the run finished before it could be killed: make epochs longer"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    completed = json.loads(meta.read_text())["epoch"]
    assert 2 <= completed < epochs

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from epoch {completed}/{epochs}" in second.stdout + second.stderr
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["status"] == "ok" and resumed["resumed_from_epoch"] == completed

    train(*overrides, run_dir=tmp_path / "whole")  # the same run, never interrupted
    assert max_abs_diff(export_weights(run_dir), export_weights(tmp_path / "whole")) <= 1e-5


def test_inside_multi_worker_its_workers_are_ranks_of_the_run_dir_lock_and_share_the_host():
    """The run-dir lock and the thread pools ask the strategy; inside multi_worker the pipeline answers
    as multi_worker does (else every launched worker found the launcher's lock and exited 2)."""
    from scaleflow.strategies.base import UNDER_LAUNCHER
    from scaleflow.strategies.multi_worker import WORKER_ENV
    from scaleflow.strategies.pipeline import Pipeline

    hybrid = compose("strategy=pipeline", "strategy.data_parallel=multi_worker", "strategy.num_workers=2",
                     "hardware.logical_devices=2")
    assert Pipeline.process_rank(hybrid, {WORKER_ENV: "1"}) == UNDER_LAUNCHER
    assert Pipeline.local_processes(hybrid, {}) == 2
    alone = compose("strategy=pipeline", "hardware.logical_devices=2")
    assert Pipeline.process_rank(alone, {WORKER_ENV: "1"}) is None
    assert Pipeline.local_processes(alone, {}) == 1
