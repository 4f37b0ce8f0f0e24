"""Shared test suites for scaleflow's extension points, as Hydra's `LauncherTestSuite` is for launchers.

A plugin's own tests subclass the suite of what it provides and name it; pytest then runs every test
of the suite against the plugin (a class whose name starts with `Test`):

    # my_plugin/tests/test_my_plugin.py
    from scaleflow.testing import DatasetTestSuite, ModelTestSuite, StrategyTestSuite

    class TestTinyModel(ModelTestSuite):
        model = "tiny"

    class TestTinyData(DatasetTestSuite):
        dataset = "tiny"

    class TestTwoCPUs(StrategyTestSuite):
        strategy = "two_cpus"

The suites train real models on small data (one TensorFlow import per pytest process, set up by
`tensorflow_session`), and check what scaleflow relies on: config-only hooks never import
TensorFlow, what a plugin states (shapes, counts, topology) matches what it does.
"""

from scaleflow.testing.datasets import DatasetTestSuite
from scaleflow.testing.exporters import ExporterTestSuite
from scaleflow.testing.models import ModelTestSuite
from scaleflow.testing.session import compose, run_without_tensorflow, tensorflow_session, train
from scaleflow.testing.strategies import StrategyTestSuite

__all__ = ["DatasetTestSuite", "ExporterTestSuite", "ModelTestSuite", "StrategyTestSuite", "compose",
           "run_without_tensorflow", "tensorflow_session", "train"]
