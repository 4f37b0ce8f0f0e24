"""`ExporterTestSuite`: what every exporter plugin must do.

Written against today's `Exporter.export(model, cfg, run_dir, sample, is_chief)`; the exporter
template method (stage, write, reload, compare, rename) will add its own checks here.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from scaleflow.testing.session import compose, tensorflow_session


class ExporterTestSuite:
    """Tests every exporter plugin passes. Subclass it as `Test<Something>` and set:

    Attributes:
        exporter: the option name (`export=<exporter>`).
        overrides: extra overrides.

    Example:
        class TestOnnx(ExporterTestSuite):
            exporter = "onnx"
    """

    exporter: ClassVar[str]
    overrides: ClassVar[Sequence[str]] = ()

    def config(self, *extra: str):
        return compose(f"export={self.exporter}", *self.overrides, *extra)

    def test_is_registered_as_an_exporter_under_its_name(self):
        from scaleflow import registry
        from scaleflow.export.base import Exporter

        cls = registry.get("exporter", self.exporter)
        assert issubclass(cls, Exporter) and cls.name == self.exporter

    def test_it_writes_a_verified_export_of_a_trained_model(self, tmp_path):
        import keras

        from scaleflow import registry

        tensorflow_session()
        cfg = self.config()
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        sample = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
        result = registry.get("exporter", self.exporter)().export(model, cfg, str(tmp_path), sample, is_chief=True)
        assert result is None or isinstance(result, dict)
        if result and result.get("path"):
            import os

            assert os.path.exists(result["path"]) and result.get("verified") in (True, None)
