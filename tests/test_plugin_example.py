"""A plugin package extends scaleflow exactly as the built-ins do: entry points + its own config files."""

from __future__ import annotations

import pytest

from conftest import compose
from scaleflow import registry


def test_example_plugin_is_discovered_with_its_distribution():
    assert registry.registrations("model")["linear"].distribution == "scaleflow-example"
    assert registry.registrations("dataset")["moons"].distribution == "scaleflow-example"


def test_plugin_config_files_and_schema_join_the_config_tree():
    cfg = compose("model=linear", "data=moons", "data.noise=0.2")
    assert cfg.model.name == "linear" and cfg.model.use_bias is True and cfg.data.noise == 0.2
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'noise'"):
        compose("data=moons", "data.nosie=0.2")  # the plugin's schema types its keys


@pytest.mark.integration
def test_plugin_model_and_dataset_train(train):
    run = train("model=linear", "data=moons", "data.num_examples=600", "trainer.epochs=3",
                "trainer.learning_rate=0.05", "export=none")
    assert run["status"] == "ok" and run["config"]["model"]["name"] == "linear"
    assert run["metrics"]["final"]["val_accuracy"] > 0.7  # two moons are nearly linearly separable


def test_linear_use_bias_decides_whether_the_model_has_a_bias(tf):
    from scaleflow.models.base import InputSpec

    spec = InputSpec((3,), 2)
    for use_bias, parameters in ((True, 3 * 2 + 2), (False, 3 * 2)):
        cfg = compose("model=linear", f"model.use_bias={str(use_bias).lower()}")
        model_plugin = registry.get("model", "linear")()
        assert model_plugin.build(cfg.model, spec).count_params() == parameters
        assert model_plugin.num_parameters(cfg.model, spec) == parameters
