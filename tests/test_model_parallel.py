"""strategy=model_parallel and strategy=hybrid, before any process starts: the mesh, the layout rules,
what only TensorFlow has, the multi-host arguments and the training process' environment. No JAX run
here (tests/test_model_parallel_jax.py trains); everything is config, pure Python, or a model built
in this session's TensorFlow to read its variable paths."""

from __future__ import annotations

import pytest

from scaleflow.errors import ConfigError
from scaleflow.strategies.layout import LayoutPlan, check_rules, normalise, shard_bytes
from scaleflow.testing import StrategyTestSuite
from conftest import cli, compose


class TestModelParallelSuite(StrategyTestSuite):
    strategy = "model_parallel"
    overrides = ("hardware.logical_devices=4",)
    trains = False  # it trains in its own JAX process: tests/test_model_parallel_jax.py


class TestHybridSuite(StrategyTestSuite):
    strategy = "hybrid"
    overrides = ("hardware.logical_devices=4", "strategy.mesh=[2,2]")
    trains = False


def test_model_parallel_takes_every_device_on_the_model_axis():
    from scaleflow.strategies.model_parallel import ModelParallel

    cfg = compose("strategy=model_parallel", "hardware.logical_devices=4")
    assert ModelParallel.mesh_shape(cfg) == (1, 4)
    topology = ModelParallel.topology(cfg, None)
    assert (topology.replicas, topology.devices_per_replica, topology.pipelines) == (1, 4, 1)


def test_hybrid_splits_the_batch_over_the_data_axis_and_the_model_over_the_other():
    from scaleflow.strategies.hybrid import Hybrid

    cfg = compose("strategy=hybrid", "strategy.mesh=[2,2]", "hardware.logical_devices=4", "data.batch_size=64")
    topology = Hybrid.topology(cfg, None)
    assert (topology.replicas, topology.devices_per_replica) == (2, 2)
    with pytest.raises(ConfigError, match=r"data.batch_size=63.*multiple of 2.*data axis"):
        compose("strategy=hybrid", "strategy.mesh=[2,2]", "hardware.logical_devices=4", "data.batch_size=63")


@pytest.mark.parametrize("overrides, key, says", [
    (["strategy=hybrid", "strategy.mesh=[4,2]", "hardware.logical_devices=4"], "strategy.mesh",
     r"\[4, 2\]: expected \[D, M\] with D x M = 4.*valid meshes: \[1, 4\], \[2, 2\], \[4, 1\]"),
    (["strategy=hybrid", "hardware.logical_devices=4"], "strategy.mesh", r"e.g. strategy.mesh=\[2, 2\]"),
    (["strategy=hybrid", "strategy.mesh=[2,0]", "hardware.logical_devices=4"], "strategy.mesh", "two integers"),
    (["strategy=model_parallel", "strategy.mesh=[2,2]", "hardware.logical_devices=4"], "strategy.mesh",
     "strategy=hybrid takes"),
    (["strategy=model_parallel", "strategy.layout={dense_0/kernel:[null,modl]}"], "strategy.layout.dense_0/kernel",
     "'modl' is not an axis of the mesh"),
    (["strategy=model_parallel", "strategy.layout={dense_0/kernel:[model,model]}"], "strategy.layout.dense_0/kernel",
     "each mesh axis at most once"),
    (["strategy=model_parallel", "strategy.layout={dense_0/kernel:3}"], "strategy.layout.dense_0/kernel",
     "one mesh axis name or null per dimension"),
    (["strategy=model_parallel", "strategy.layout=[1]"], "strategy.layout", "a mapping"),
    (["strategy=model_parallel", "export=tflite"], "export", "declares backends \\['tensorflow'\\]"),
    (["strategy=model_parallel", "profile=summary"], "profile", "off or tensorboard"),
    (["strategy=model_parallel", "profile.port=6009"], "profile.port", "TensorFlow's"),
    (["strategy=model_parallel", "strategy.cluster=slurm"], "strategy.cluster", "SLURM_JOB_NODELIST is not set"),
])
def test_bad_input_is_a_config_error_naming_key_value_and_what_is_allowed(overrides, key, says, monkeypatch):
    for name in ("SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST", "HOROVOD_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=says) as caught:
        compose(*overrides)
    assert caught.value.key == key


def test_a_tensorflow_only_model_plugin_is_refused():
    from scaleflow import registry
    from scaleflow.models.base import Model

    assert "jax" in registry.get("model", "mlp").backends and Model.backends == ("tensorflow",)
    tf_only = [n for n in registry.names("model") if "jax" not in registry.get("model", n).backends]
    if not tf_only:
        pytest.skip("no TensorFlow-only model plugin installed (the example plugin's `linear` is one)")
    with pytest.raises(ConfigError, match=rf"model='{tf_only[0]}'.*runs on Keras' jax backend.*mlp"):
        compose("strategy=model_parallel", f"model={tf_only[0]}")


def test_a_jax_strategy_under_horovodrun_is_refused(monkeypatch):
    monkeypatch.setenv("HOROVOD_RANK", "0")
    with pytest.raises(ConfigError, match="strategy='hybrid'.*horovodrun.*HOROVOD_RANK"):
        compose("strategy=hybrid", "strategy.mesh=[1,1]")


@pytest.mark.slow
def test_a_mesh_that_does_not_fit_exits_2_before_any_process_starts(tmp_path):
    run_dir = tmp_path / "run"
    result = cli("strategy=hybrid", "strategy.mesh=[2,2]", "hardware.logical_devices=2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "scaleflow: config error: strategy.mesh=[2, 2]: expected [D, M] with D x M = 2")
    assert "Traceback" not in result.stderr and not (run_dir / "jax.log").exists()


# ------------------------------------------------------------------------------------ layout rules
MESH = {"batch": 1, "model": 4}


def test_user_rules_override_the_model_defaults_and_are_reported():
    plan = LayoutPlan(user=normalise({"dense_0/kernel": ["model", None]}),
                      defaults=normalise({"dense_0/kernel": [None, "model"], "dense_0/bias": ["model"]}), mesh=MESH)
    assert plan.axes_for("dense_0/kernel", (8, 16)) == ("model", None)
    assert plan.axes_for("dense_0/bias", (16,)) == ("model",)
    assert plan.axes_for("scores/kernel", (16, 3)) is None  # no rule: replicated
    plan.check()
    report = plan.report()["variables"]
    assert report["dense_0/kernel"]["from"] == "strategy.layout" and report["dense_0/bias"]["from"] == "model default"


def test_a_rule_matching_no_variable_is_an_error_naming_it():
    plan = LayoutPlan(user=normalise({"dense_9/kernel": [None, "model"]}), defaults={}, mesh=MESH)
    plan.resolve("dense_0/kernel", (8, 16))
    with pytest.raises(ConfigError, match=r"strategy.layout.dense_9/kernel=.*matching at least one.*dense_0/kernel"):
        plan.check()


def test_patterns_match_whole_paths_only():
    plan = LayoutPlan(user=normalise({"dense_1/kernel": [None, "model"]}), defaults={}, mesh=MESH)
    assert plan.resolve("dense_11/kernel", (4, 4)) is None and plan.resolve("dense_1/kernel", (4, 4)) == (None, "model")


def test_a_dimension_the_mesh_does_not_divide_is_an_error_naming_the_rule():
    plan = LayoutPlan(user=normalise({"dense_.*/kernel": [None, "model"]}), defaults={}, mesh=MESH)
    assert plan.resolve("dense_0/kernel", (8, 10)) is None  # recorded; the variable stays whole
    with pytest.raises(ConfigError, match=r"strategy.layout.dense_.\*/kernel.*dimension 1 of dense_0/kernel \[8, 10\] "
                                          r"has 10, which the 'model' axis \(4 devices\) does not divide"):
        plan.check()


def test_a_default_rule_that_does_not_fit_says_how_to_override_it():
    plan = LayoutPlan(user={}, defaults=normalise({"dense_0/kernel": [None, "model"]}), mesh={"batch": 1, "model": 3})
    plan.resolve("dense_0/kernel", (8, 16))
    with pytest.raises(ConfigError, match=r"model default rule 'dense_0/kernel'.*override it with strategy.layout"):
        plan.check()


def test_a_rule_of_the_wrong_rank_is_an_error():
    plan = LayoutPlan(user=normalise({"conv_0/kernel": ["model"]}), defaults={}, mesh=MESH)
    plan.resolve("conv_0/kernel", (3, 3, 1, 8))
    with pytest.raises(ConfigError, match=r"4 entries, one per dimension of conv_0/kernel"):
        plan.check()


def test_rules_name_only_mesh_axes():
    with pytest.raises(ConfigError, match="'data' is not an axis of the mesh"):
        check_rules(normalise({"d/kernel": ["data", None]}), ("batch", "model"))
    check_rules(normalise({"d/kernel": ["batch", "model"]}), ("batch", "model"))


def test_bytes_per_device_of_a_split_variable():
    assert shard_bytes((8, 16), 4, (None, "model"), MESH) == 8 * 16 * 4 // 4
    assert shard_bytes((8, 16), 4, None, MESH) == 8 * 16 * 4


@pytest.mark.parametrize("model, overrides, input_shape", [
    ("mlp", {"hidden_units": [16, 8, 8]}, (12,)),
    ("cnn", {"filters": [8, 16]}, (8, 8, 1)),
    ("resnet", {"width": 8, "stages": 2, "depth": 1}, (8, 8, 3)),
])
def test_every_built_in_model_gives_default_rules_that_match_its_variables(tf, model, overrides, input_shape):
    """Built under this session's TensorFlow backend: variable paths do not depend on the backend (a
    layer Keras names itself, e.g. the CNN's "dense", may be numbered here: this session built others)."""
    from omegaconf import OmegaConf

    from scaleflow import registry
    from scaleflow.models.base import InputSpec

    plugin = registry.get("model", model)()
    config = OmegaConf.merge(OmegaConf.structured(plugin.Config(name=model)), overrides)
    built = registry.get("task", "classification")().build_model(plugin, config, InputSpec(input_shape, 4))
    spec = InputSpec(input_shape, 4)
    rules = normalise(plugin.layout_rules(config, spec), key="model default")
    assert rules
    plan = LayoutPlan(user={}, defaults=rules, mesh={"batch": 1, "model": 2})
    split = [v.path for v in built.weights if plan.resolve(v.path, v.shape)]
    plan.check()
    assert split and "scores/kernel" not in split  # the task's head stays whole


# --------------------------------------------------------------------------- multi-host arguments
def test_initialize_arguments_from_keras_variables_tf_config_and_slurm():
    from scaleflow.strategies.jax_cluster import first_host, initialize_arguments

    assert initialize_arguments("local", {}) is None
    assert initialize_arguments("env", {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:1234",
                                        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                                        "KERAS_DISTRIBUTION_PROCESS_ID": "1"}) == \
        {"job_addresses": "10.0.0.1:1234,10.0.0.2:1234", "num_processes": 2, "process_id": 1}
    tf_config = '{"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}'
    assert initialize_arguments("env", {"TF_CONFIG": tf_config}) == \
        {"job_addresses": "a:1,b:1,c:1", "num_processes": 3, "process_id": 2}
    assert initialize_arguments("slurm", {"SLURM_PROCID": "3", "SLURM_NTASKS": "4",
                                          "SLURM_JOB_NODELIST": "gpu[07-10],cpu1"}, port=2222) == \
        {"job_addresses": "gpu07:2222", "num_processes": 4, "process_id": 3}
    assert first_host("node1") == "node1" and first_host("n[3,5-6]") == "n3"


@pytest.mark.parametrize("cluster, environ, says", [
    ("env", {}, "none is set"),
    ("env", {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, "missing: KERAS_DISTRIBUTION_JOB_ADDRESSES"),
    ("env", {"TF_CONFIG": "{"}, "TF_CONFIG is malformed"),
    ("slurm", {"SLURM_JOB_NODELIST": "n1", "SLURM_NTASKS": "2", "SLURM_PROCID": "x"}, "SLURM_PROCID='x'"),
    ("slurm", {"SLURM_JOB_NODELIST": "n1", "SLURM_NTASKS": "2", "SLURM_PROCID": "2"}, "process 2 of 2"),
])
def test_a_cluster_the_environment_does_not_describe_is_a_config_error(cluster, environ, says):
    from scaleflow.strategies.jax_cluster import initialize_arguments

    with pytest.raises(ConfigError, match=says) as caught:
        initialize_arguments(cluster, environ)
    assert caught.value.key == "strategy.cluster"


def test_a_multi_host_mesh_counts_every_host_s_devices(monkeypatch):
    from scaleflow.strategies.hybrid import Hybrid

    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    cfg = compose("strategy=hybrid", "strategy.cluster=slurm", "strategy.mesh=[2,2]", "hardware.logical_devices=2")
    topology = Hybrid.topology(cfg, None)
    assert (topology.processes, topology.pipelines, topology.replicas) == (2, 2, 2)
    assert not Hybrid().is_writer(cfg)  # process 1 of 2: only process 0 writes run.json and the export


def test_each_process_feeds_the_rows_of_the_data_axis_it_holds():
    from scaleflow.strategies.keras_jax import input_pipelines

    assert [input_pipelines(4, 2, p) for p in range(2)] == [(2, 0), (2, 1)]  # 2 rows each
    assert [input_pipelines(1, 2, p) for p in range(2)] == [(1, 0), (1, 0)]  # model_parallel: one row, shared
    assert [input_pipelines(2, 4, p) for p in range(4)] == [(2, 0), (2, 0), (2, 1), (2, 1)]


# ------------------------------------------------------------------------- the training process
def test_the_training_process_gets_the_jax_backend_and_the_host_device_count():
    from scaleflow.strategies.keras_jax import JAX_PROCESS_ENV, training_command, training_environment

    cfg = compose("strategy=model_parallel", "hardware.logical_devices=4")
    env = training_environment(cfg, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_foo=1"})
    assert env["KERAS_BACKEND"] == "jax" and env[JAX_PROCESS_ENV] == "1"
    assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=4"
    command = training_command(["strategy=model_parallel", "hydra.run.dir=x"], "/runs/a")
    assert command[1:] == ["-m", "scaleflow", "strategy=model_parallel", "hydra.run.dir=/runs/a",
                           "hydra.output_subdir=null", "hydra.job.name=jax"]


def test_config_only_paths_import_neither_tensorflow_nor_jax():
    import subprocess
    import sys

    code = ("import sys; from scaleflow.cli import compose; "
            "compose(['strategy=hybrid', 'strategy.mesh=[2,2]', 'hardware.logical_devices=4', 'mode=plan']); "
            "print(sorted(m for m in ('tensorflow', 'jax', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
