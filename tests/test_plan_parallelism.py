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
    assert MLP().layout_rules(config, spec) == {"^dense_0/kernel$": (None, "model"),
                                                "^dense_1/kernel$": (None, "model")}
