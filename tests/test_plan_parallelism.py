"""The contract between strategies and the planner: a strategy states how it splits one step
(`Parallelism`: data x model axes, pipeline stages, micro-batches, layout), a model states its
variables and default layout rules, all from the config alone."""

from __future__ import annotations

import math

import pytest

from conftest import compose


def test_parallelism_defaults_to_pure_data_parallelism_from_the_topology():
    from scaleflow import registry
    from scaleflow.planning.topology import figures
    from scaleflow.strategies.base import Parallelism

    for overrides, data in ((("strategy=default",), 1), (("strategy=mirrored", "hardware.logical_devices=2"), 2),
                            (("strategy=auto", "hardware.logical_devices=2"), 2)):
        cfg = compose(*overrides)
        p = registry.get("strategy", cfg.strategy.name).parallelism(cfg, figures(cfg))
        assert p == Parallelism(data=data) and p.devices == data and p.bubble == 0.0


def test_parallelism_states_mesh_bubble_and_a_normalised_layout():
    from scaleflow.strategies.base import DATA_AXIS, MODEL_AXIS, Parallelism

    p = Parallelism(data=2, model=2, layout={"dense_1/kernel": ["model", None], "dense_0/kernel": (None, "model")})
    assert p.mesh == (2, 2) and p.devices == 4 and (DATA_AXIS, MODEL_AXIS) == ("batch", "model")
    assert p.layout == (("dense_0/kernel", (None, "model")), ("dense_1/kernel", ("model", None)))
    assert p == Parallelism(data=2, model=2, layout=list(reversed(p.layout)))  # order does not matter
    assert Parallelism(stages=2, micro_batches=4).bubble == pytest.approx(1 / 5)  # (S-1)/(K+S-1)
    with pytest.raises(ValueError, match="Parallelism.model"):
        Parallelism(model=0)


def test_the_mlp_states_its_variables_as_keras_names_them_and_splits_its_hidden_kernels():
    from scaleflow.models.base import InputSpec
    from scaleflow.models.mlp import MLP, MLPConfig

    spec, config = InputSpec((32,), 10), MLPConfig(name="mlp", hidden_units=[64, 32])
    shapes = MLP().variable_shapes(config, spec)
    assert shapes == {"dense_0/kernel": (32, 64), "dense_0/bias": (64,), "dense_1/kernel": (64, 32),
                      "dense_1/bias": (32,), "scores/kernel": (32, 10), "scores/bias": (10,)}
    assert sum(math.prod(s) for s in shapes.values()) == MLP().num_parameters(config, spec)
    assert len(shapes) == MLP().num_gradient_tensors(config, spec)
    assert MLP().layout_rules(config, spec) == {"dense_0/kernel": (None, "model"), "dense_1/kernel": (None, "model")}


# ---------------------------------------------------------------- the planner (planning/parallel.py)
def _mlp(*overrides):
    """(work, figures, shapes, default rules) of an MLP config, as mode=plan computes them."""
    from scaleflow import registry, tasks
    from scaleflow.planning.parallel import variables
    from scaleflow.planning.report import workload
    from scaleflow.planning.topology import figures

    cfg = compose("data.num_examples=512", *overrides)
    info = tasks.dataset_for(cfg).describe(cfg.data)
    spec = tasks.get(cfg).input_spec(info)
    model = registry.get("model", cfg.model.name)()
    work, _ = workload(cfg, info)
    return cfg, work, figures(cfg), variables(model, cfg.model, spec), model.layout_rules(cfg.model, spec)


def _plan(work, figs, shapes, rules, p, **kw):
    from scaleflow.planning.parallel import place, plan_parallelism

    return plan_parallelism(work, figs, p, place(shapes, rules, p), **kw)


def test_model_parallel_holds_one_mth_of_the_parameters_and_optimizer_state_per_device():
    from scaleflow.strategies.base import Parallelism

    _, work, figs, shapes, rules = _mlp("model.hidden_units=[512,512,512]", "hardware.logical_devices=4")
    for m in (2, 4):
        mem = _plan(work, figs, shapes, rules, Parallelism(model=m))["memory_per_device"]
        assert 1 / m <= mem["ratio_vs_replicated"] <= 1 / m + 0.05  # the head and biases stay replicated
        assert mem["parameters_optimizer_bytes"] == pytest.approx(mem["replicated_parameters_optimizer_bytes"]
                                                                  * mem["ratio_vs_replicated"], rel=1e-5)
    assert _plan(work, figs, shapes, rules, Parallelism(data=4))["memory_per_device"]["ratio_vs_replicated"] == 1.0


def test_a_split_model_scales_by_replicating_the_split_over_the_data_axis():
    from scaleflow.planning.report import parallel_scaling
    from scaleflow.planning.topology import Layout
    from scaleflow.strategies.base import Parallelism

    _, work, figs, shapes, rules = _mlp("model.hidden_units=[512,512]", "hardware=gpu", "hardware.num_gpus=8")
    par = {"parallelism": Parallelism(model=2), "shapes": shapes, "defaults": rules}
    rows = parallel_scaling(work, figs, Layout("default", 1, 1, 1, 1), par, max_replicas=4)
    assert [(r["replicas"], r["devices"]) for r in rows] == [(1, 2), (2, 4), (3, 6), (4, 8)]
    assert rows[0]["efficiency_fixed_global"] == rows[0]["efficiency_fixed_per_replica"] == 1.0
    assert all(0 < r["efficiency_fixed_per_replica"] <= 1.0 for r in rows)


def test_pure_data_parallelism_costs_what_the_data_parallel_cost_model_says():
    from scaleflow.planning.cost_model import memory_per_replica, step_time
    from scaleflow.planning.topology import layout
    from scaleflow.strategies.base import Parallelism

    cfg, work, figs, shapes, rules = _mlp("strategy=mirrored", "hardware.logical_devices=2")
    planned = _plan(work, figs, shapes, rules, Parallelism(data=2))
    assert planned["step"]["total_s"] == pytest.approx(step_time(work, figs, layout(cfg, figs)).total_s, rel=1e-5)
    assert planned["memory_per_device"]["total_bytes"] == pytest.approx(
        memory_per_replica(work, figs, 32)["total_bytes"], rel=1e-4)


def test_model_axis_pays_an_all_gather_and_a_reduce_scatter_per_split_layer_and_the_data_axis_an_all_reduce():
    from scaleflow.planning.cost_model import ring_allreduce_s
    from scaleflow.strategies.base import Parallelism

    _, work, figs, shapes, rules = _mlp("model.hidden_units=[256,128]", "hardware.logical_devices=4",
                                        "data.batch_size=64", "hardware.latency_s=1e-5", "hardware.bandwidth_bytes_s=1e9")
    plan = _plan(work, figs, shapes, rules, Parallelism(data=2, model=2))
    comm = plan["communication"]
    assert comm["model_axis"]["layers_split"] == ["dense_0", "dense_1"]  # the head stays replicated
    # 32 examples per replica; dense_0 and dense_1 emit 256 + 128 float32 values per example
    assert comm["model_axis"]["all_gather_bytes_per_micro_batch"] == 32 * (256 + 128) * 4
    assert comm["model_axis"]["seconds"] == pytest.approx(
        sum(ring_allreduce_s(2, 32 * w * 4, 1e9, 1e-5) for w in (256, 128)), rel=1e-4)
    # each device all-reduces the gradients of what it holds: half of the split kernels, all of the rest
    held = sum(math.prod(s) // (2 if k in ("dense_0/kernel", "dense_1/kernel") else 1) for k, s in shapes.items())
    assert comm["data_axis"]["all_reduce_bytes"] == held * 4
    assert comm["data_axis"]["seconds"] == pytest.approx(ring_allreduce_s(2, held * 4, 1e9, 1e-5), rel=1e-4)

    # a column-split layer feeding a row-split one (Megatron's pair): one all-reduce of the row
    # layer's partial outputs forward; the first layer's input (the data) needs no gradient
    pair = Parallelism(data=2, model=2, layout={"dense_1/kernel": ("model", None)})
    comm = _plan(work, figs, shapes, rules, pair)["communication"]["model_axis"]
    assert comm["all_gather_bytes_per_micro_batch"] == comm["reduce_scatter_bytes_per_micro_batch"] == 0
    assert comm["all_reduce_bytes_per_micro_batch"] == 32 * 128 * 4
    assert comm["seconds"] == pytest.approx(ring_allreduce_s(2, 32 * 128 * 4, 1e9, 1e-5), rel=1e-4)


def test_pipeline_stages_cut_at_the_models_cut_points_and_idle_for_the_bubble():
    from scaleflow import registry, tasks
    from scaleflow.errors import ConfigError
    from scaleflow.strategies.base import Parallelism

    cfg, work, figs, shapes, rules = _mlp("model.hidden_units=[256,256,256,256]", "hardware.logical_devices=2")
    model = registry.get("model", "mlp")()
    spec = tasks.get(cfg).input_spec(tasks.dataset_for(cfg).describe(cfg.data))
    cuts = {"cut_points": model.cut_points(cfg.model), "segments": model.cut_segments(cfg.model, spec)}
    assert cuts["cut_points"] == ["dense_0", "dense_1", "dense_2"]  # the head rides with the last block

    plan = _plan(work, figs, shapes, rules, Parallelism(stages=2, micro_batches=4), **cuts)
    assert [s["layers"] for s in plan["per_stage"]] == [["dense_0", "dense_1"], ["dense_2", "dense_3", "scores"]]
    assert plan["communication"]["pipeline"]["cut_points"] == ["dense_1"]  # the planner's balanced choice, named
    pipeline = plan["step"]["compute_s"] + plan["step"]["pipeline_send_s"] + plan["step"]["bubble_s"]
    assert plan["step"]["bubble_s"] / pipeline == pytest.approx(1 / 5, rel=1e-4)  # (S-1)/(K+S-1)
    assert plan["communication"]["pipeline"]["bubble"] == pytest.approx(1 / 5)
    sends = [s["micro_batch_s"]["send"] for s in plan["per_stage"]]
    assert sends[0] == sends[1] > 0  # dense_1's outputs and their gradient occupy both stages
    assert plan["memory_per_device"]["ratio_vs_replicated"] < 0.75  # a stage holds its own layers only

    # the strategy's cuts (strategy.cuts, or its even spread) place the stages
    cut = _plan(work, figs, shapes, rules, Parallelism(stages=3, micro_batches=4, cuts=("dense_0", "dense_2")), **cuts)
    assert [s["layers"] for s in cut["per_stage"]] == [["dense_0"], ["dense_1", "dense_2"], ["dense_3", "scores"]]
    assert cut["communication"]["pipeline"]["cuts"] == "cut after dense_0, dense_2"
    with pytest.raises(ConfigError) as e:
        _plan(work, figs, shapes, rules, Parallelism(stages=5, micro_batches=8), **cuts)
    assert e.value.key == "strategy.stages" and e.value.value == 5 and "at most 4" in e.value.allowed


def test_built_in_models_cut_segments_line_up_with_their_cut_points():
    from scaleflow import registry
    from scaleflow.models.base import InputSpec

    for name, options in (("mlp", {"batch_norm": True}), ("cnn", {}), ("resnet", {"stages": 2, "depth": 2})):
        model = registry.get("model", name)()
        config, spec = model.Config(name=name, **options), InputSpec((16,), 3)
        segments = model.cut_segments(config, spec)
        assert len(segments) == len(model.cut_points(config)) + 1, name
        layers = list(dict.fromkeys(path.split("/")[0] for path in model.variable_shapes(config, spec)))
        assert [n for seg in segments for n in seg] == layers, name  # every variable's layer once, in order


def test_a_layout_rule_that_matches_nothing_or_does_not_divide_is_the_runs_config_error_naming_it():
    from scaleflow.errors import ConfigError
    from scaleflow.planning.parallel import place
    from scaleflow.strategies.base import Parallelism

    _, _, _, shapes, rules = _mlp("model.hidden_units=[64,30]")
    cases = [(2, {"dense_9/kernel": (None, "model")}, "strategy.layout.dense_9/kernel", "a pattern matching"),
             (2, {"dense_0": (None, "model")}, "strategy.layout.dense_0", "a pattern matching"),  # whole paths only
             (2, {"dense_0/kernel": (None, "depth")}, "strategy.layout.dense_0/kernel", "axes from the mesh"),
             (2, {"dense_0/kernel": ("model",)}, "strategy.layout.dense_0/kernel", "2 entries"),
             (4, {}, "strategy.layout (model default rule 'dense_1/kernel')", "divide")]  # 30 outputs over 4
    for model, layout, key, allowed in cases:
        with pytest.raises(ConfigError) as e:
            place(shapes, rules, Parallelism(model=model, layout=layout))
        assert e.value.key == key and allowed in e.value.allowed, (e.value.key, e.value.allowed)
    placed = {p.path: p for p in place(shapes, rules, Parallelism(model=2, layout={"dense_.*/kernel": ("model", None)}))}
    assert [placed[f"dense_{i}/kernel"].axes for i in (0, 1)] == [("model", None)] * 2
    placed = {p.path: p for p in place(shapes, rules, Parallelism(model=2, layout={"dense_1/kernel": (None, None)}))}
    assert placed["dense_1/kernel"].source == "strategy.layout" and placed["dense_1/kernel"].shards == 1
    assert placed["dense_0/kernel"].source == "model default" and placed["dense_0/kernel"].shards == 2
    assert placed["scores/kernel"].source == "replicated"


def test_a_split_that_does_not_use_the_devices_there_are_is_a_config_error():
    from scaleflow.errors import ConfigError
    from scaleflow.planning.parallel import check_devices
    from scaleflow.strategies.base import Parallelism

    cfg, _, figs, _, _ = _mlp("hardware.logical_devices=4")
    check_devices(cfg, figs, Parallelism(data=2, model=2), processes=1)
    check_devices(cfg, figs, Parallelism(data=2, stages=2, micro_batches=2), processes=1)
    with pytest.raises(ConfigError) as e:
        check_devices(cfg, figs, Parallelism(data=2, model=4), processes=1)
    assert e.value.key == "strategy.mesh" and e.value.value == [2, 4] and "= 4" in e.value.allowed
    assert "hardware.logical_devices=8" in e.value.hint
    with pytest.raises(ConfigError) as e:
        check_devices(cfg, figs, Parallelism(stages=2, micro_batches=2), processes=1)
    assert e.value.key == "strategy.stages" and e.value.value == 2


def test_a_four_billion_parameter_mlp_on_a_gpu_gets_a_split_that_fits_with_its_throughput():
    from scaleflow.planning.report import build, render

    cfg = compose("mode=plan", "hardware=gpu", "model.hidden_units=[32768,32768,32768,32768,32768]",
                  "data.num_examples=512")
    plan = build(cfg)
    assert plan["model"]["parameters"] > 4e9
    assert not plan["parallelism"]["memory_per_device"]["fits"]
    rec = plan["recommendation"]["parallelism"]
    assert rec["fits_one_device"] is False and rec["candidates"]
    for c in rec["candidates"]:
        assert c["memory_per_device_bytes"] <= 0.9 * 8e10 and c["examples_per_s"] > 0 and c["devices"] >= 2
    assert rec["best"]["devices"] == rec["fewest_devices"] == 2 and "hardware.num_gpus=2" in rec["best"]["overrides"]
    assert {c["strategy"] for c in rec["candidates"]} >= {"model_parallel", "pipeline"}
    text = render(plan)
    assert "does NOT fit" in text and "recommend: parallelism: one device needs" in text


def test_built_in_models_state_their_variables_as_the_built_keras_model_has_them(tf):
    import keras

    from scaleflow import registry
    from scaleflow.models.base import InputSpec

    for name, options, spec in (("mlp", {"batch_norm": True}, InputSpec((16,), 3)),
                                ("cnn", {}, InputSpec((8, 8, 3), 5)),
                                ("resnet", {"stages": 2, "depth": 1, "width": 8}, InputSpec((16,), 3))):
        model = registry.get("model", name)()
        config = model.Config(name=name, **options)
        keras.backend.clear_session()  # automatic layer names ("dense", "batch_normalization") as in a fresh run
        built = model.build(config, spec)
        assert list(model.variable_shapes(config, spec).items()) == \
            [(v.path, tuple(v.shape)) for v in built.trainable_variables], name


NO_TF_OR_JAX = """
import atexit, runpy, sys
atexit.register(lambda: print("IMPORTED", sorted(m for m in ("tensorflow", "jax", "keras") if m in sys.modules)))
sys.argv = ["scaleflow"] + sys.argv[1:]
runpy.run_module("scaleflow", run_name="__main__")
"""


@pytest.mark.slow
def test_mode_plan_plans_a_hybrid_mesh_from_the_config_alone_and_refuses_a_mesh_the_devices_do_not_make(tmp_path):
    import json
    import subprocess
    import sys

    from scaleflow import registry

    if "hybrid" not in registry.names("strategy"):
        pytest.skip("strategy=hybrid is not installed")
    run = lambda *args: subprocess.run([sys.executable, "-c", NO_TF_OR_JAX, "mode=plan", "strategy=hybrid",  # noqa: E731
                                        *args, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    result = run("strategy.mesh=[2,2]", "hardware.logical_devices=4", "model.hidden_units=[256,256]")
    assert result.returncode == 0, result.stderr
    assert "IMPORTED []" in result.stdout  # neither TensorFlow nor JAX nor Keras
    assert "parallelism: mesh 2 x 2 (batch x model)" in result.stdout
    par = json.loads((tmp_path / "plan.json").read_text())["parallelism"]
    assert (par["mesh"], par["devices"]) == ([2, 2], 4)
    assert par["memory_per_device"]["ratio_vs_replicated"] < 0.6  # the hidden kernels are halved
    assert par["communication"]["model_axis"]["seconds"] > 0 and par["communication"]["data_axis"]["seconds"] > 0

    result = run("strategy.mesh=[2,4]", "hardware.logical_devices=4")
    assert result.returncode == 2 and "IMPORTED []" in result.stdout
    assert "strategy.mesh=[2, 4]" in result.stderr and "4" in result.stderr and "Traceback" not in result.stderr
