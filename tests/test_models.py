"""Every built-in model builds for vectors and images, and its planner figures match Keras."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose
from scaleflow import registry
from scaleflow.models.base import InputSpec

SPECS = [InputSpec((16,), 3), InputSpec((12, 12, 3), 5)]


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("spec", SPECS, ids=["vector", "image"])
def test_model_builds_and_outputs_class_probabilities(tf, name, spec):
    cfg = compose(f"model={name}")
    plugin = registry.get("model", name)()
    model = plugin.build(cfg.model, spec)
    x = np.random.default_rng(0).normal(size=(4, *spec.input_shape)).astype(np.float32)
    probs = np.asarray(model(x))
    assert probs.shape == (4, spec.num_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert plugin.num_parameters(cfg.model, spec) == model.count_params()
    assert plugin.flops_per_example(cfg.model, spec) > 0


def test_widths_and_depth_come_from_config(tf):
    spec = SPECS[0]
    small = registry.get("model", "mlp")().build(compose("model.hidden_units=[8]").model, spec)
    large = registry.get("model", "mlp")().build(compose("model.hidden_units=[64,64,64]").model, spec)
    assert small.count_params() < large.count_params()
    deep = registry.get("model", "resnet")().build(compose("model=resnet", "model.depth=3").model, spec)
    shallow = registry.get("model", "resnet")().build(compose("model=resnet", "model.depth=1").model, spec)
    assert len(deep.layers) > len(shallow.layers)


@pytest.mark.parametrize("name, overrides", [("mlp", []), ("mlp", ["model.batch_norm=true"]), ("cnn", []),
                                             ("resnet", ["model.stages=2", "model.depth=2"])])
def test_gradient_tensor_count_matches_keras(tf, name, overrides):
    cfg = compose(f"model={name}", *overrides)
    plugin = registry.get("model", name)()
    for spec in SPECS:
        model = plugin.build(cfg.model, spec)
        assert plugin.num_gradient_tensors(cfg.model, spec) == len(model.trainable_weights)
