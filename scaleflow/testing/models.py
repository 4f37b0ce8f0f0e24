"""`ModelTestSuite`: what every model plugin must do."""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from scaleflow.testing.session import compose, run_without_tensorflow, tensorflow_session, train


class ModelTestSuite:
    """Tests every model plugin passes. Subclass it as `Test<Something>` and set:

    Attributes:
        model: the option name (`model=<model>`).
        overrides: extra overrides for every config (e.g. a dataset the model suits).
        trains: False to skip the short training run.

    Example:
        class TestLinear(ModelTestSuite):
            model = "linear"
            overrides = ("data=moons",)
    """

    model: ClassVar[str]
    overrides: ClassVar[Sequence[str]] = ()
    trains: ClassVar[bool] = True
    quick: ClassVar[Sequence[str]] = ("trainer.epochs=1", "export=none", "trainer.verbose=quiet")

    def config(self, *extra: str):
        return compose(f"model={self.model}", *self.overrides, *extra)

    def spec(self, cfg):
        from scaleflow import registry
        from scaleflow.models.base import InputSpec

        info = registry.get("dataset", cfg.data.name)().describe(cfg.data)
        return InputSpec(tuple(info.input_shape), info.num_classes)

    def test_is_registered_as_a_model_under_its_name(self):
        from scaleflow import registry
        from scaleflow.models.base import Model

        cls = registry.get("model", self.model)
        assert issubclass(cls, Model) and cls.name == self.model

    def test_its_config_composes_and_validates(self):
        assert self.config().model.name == self.model

    def test_the_planner_hooks_need_no_tensorflow(self):
        args = ", ".join(repr(o) for o in (f"model={self.model}", *self.overrides))
        out = run_without_tensorflow(
            "from scaleflow import registry\nfrom scaleflow.models.base import InputSpec\n"
            f"cfg = compose({args})\n"
            "info = registry.get('dataset', cfg.data.name)().describe(cfg.data)\n"
            "spec = InputSpec(tuple(info.input_shape), info.num_classes)\n"
            "m = registry.get('model', cfg.model.name)()\n"
            "print([m.flops_per_example(cfg.model, spec), m.num_parameters(cfg.model, spec)])")
        assert out.strip()

    def test_it_builds_a_model_giving_class_probabilities(self):
        from scaleflow import registry

        tensorflow_session()
        cfg = self.config()
        spec = self.spec(cfg)
        model = registry.get("model", self.model)().build(cfg.model, spec)
        probs = np.asarray(model(np.zeros((2, *spec.input_shape), dtype=np.float32)))
        assert probs.shape == (2, spec.num_classes)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)

    def test_what_it_states_for_the_planner_matches_the_built_model(self):
        from scaleflow import registry

        tensorflow_session()
        cfg = self.config()
        spec = self.spec(cfg)
        plugin = registry.get("model", self.model)()
        model = plugin.build(cfg.model, spec)
        if plugin.num_parameters(cfg.model, spec) is not None:
            assert plugin.num_parameters(cfg.model, spec) == model.count_params()
        if plugin.num_gradient_tensors(cfg.model, spec) is not None:
            assert plugin.num_gradient_tensors(cfg.model, spec) == len(model.trainable_variables)

    def test_its_cut_points_split_the_built_model_into_stages(self):
        """strategy=pipeline cuts where `Model.cut_points` says: each names a layer of the built model,
        and the stages between them, chained, compute the model (no skip connection crosses a cut)."""
        from scaleflow import registry
        from scaleflow.strategies.pipeline import split

        tensorflow_session()
        cfg = self.config()
        spec = self.spec(cfg)
        plugin = registry.get("model", self.model)()
        model = plugin.build(cfg.model, spec)
        stages = split(model, plugin.cut_points(cfg.model))
        x = np.random.default_rng(0).normal(size=(2, *spec.input_shape)).astype(np.float32)
        y = x
        for stage in stages:
            y = stage(y, training=False)
        np.testing.assert_allclose(np.asarray(y), np.asarray(model(x, training=False)), atol=1e-6)

    def test_it_trains(self, tmp_path):
        if not self.trains:
            import pytest

            pytest.skip(f"{type(self).__name__}.trains is False")
        run = train(tmp_path / "run", f"model={self.model}", *self.overrides, *self.quick)
        assert run["status"] == "ok" and run["config"]["model"]["name"] == self.model
