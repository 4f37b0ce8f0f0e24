"""`ExporterTestSuite`: what every exporter plugin must do, through the template method
(`Exporter.export`: stage, write, reload, compare, seal, rename)."""

from __future__ import annotations

import os
from typing import ClassVar, Sequence

import numpy as np

from scaleflow.testing.session import compose, tensorflow_session


class ExporterTestSuite:
    """Tests every exporter plugin passes. Subclass it as `Test<Something>` and set:

    Attributes:
        exporter: the option name (`export=<exporter>`).
        overrides: extra overrides.

    Example:
        class TestNumpyWeights(ExporterTestSuite):
            exporter = "numpy_weights"
    """

    exporter: ClassVar[str]
    overrides: ClassVar[Sequence[str]] = ()

    def config(self, *extra: str):
        return compose(f"export={self.exporter}", *self.overrides, *extra)

    def request(self, tmp_path, is_chief: bool = True):
        import keras

        from scaleflow.export.base import ExportRequest

        tensorflow_session()
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        sample = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
        return ExportRequest(model=model, cfg=self.config(), run_dir=str(tmp_path), sample=sample,
                             metadata={"task": "classification", "class_names": ["a", "b", "c"]},
                             is_chief=is_chief)

    def plugin(self):
        from scaleflow import registry

        return registry.get("exporter", self.exporter)()

    def test_is_registered_as_an_exporter_under_its_name(self):
        from scaleflow import registry
        from scaleflow.export.base import Exporter

        cls = registry.get("exporter", self.exporter)
        assert issubclass(cls, Exporter) and cls.name == self.exporter

    def test_it_writes_a_verified_sealed_export(self, tmp_path):
        from scaleflow.export.integrity import verify_export

        result = self.plugin().export(self.request(tmp_path))
        if not result or not result.get("path"):
            return  # an exporter that writes nothing (export=none)
        assert os.path.exists(result["path"]) and result.get("verified") is True
        version_dir = result["path"] if os.path.isdir(result["path"]) else os.path.dirname(result["path"])
        assert verify_export(version_dir).ok

    def test_what_it_writes_reloads_to_the_trained_outputs(self, tmp_path):
        request = self.request(tmp_path)
        plugin = self.plugin()
        directory = str(tmp_path / "written")
        plugin.write(request.model, directory, request)
        reloaded = np.asarray(plugin.load(directory, request)(request.sample))
        np.testing.assert_allclose(reloaded, plugin.reference(request.model, request.sample), atol=1e-4)

    def test_a_non_chief_writes_nothing_at_the_real_path(self, tmp_path):
        result = self.plugin().export(self.request(tmp_path, is_chief=False))
        assert not (result or {}).get("path")
        assert not os.path.exists(os.path.join(str(tmp_path), "export"))
