"""The built-ins pass the same shared suites a plugin's tests run (scaleflow.testing)."""

from __future__ import annotations

from scaleflow.testing import DatasetTestSuite, ExporterTestSuite, ModelTestSuite, StrategyTestSuite


class TestMLP(ModelTestSuite):
    model = "mlp"
    overrides = ("model.hidden_units=[8]", "data.num_examples=256")


class TestSynthetic(DatasetTestSuite):
    dataset = "synthetic"
    overrides = ("data.num_examples=128",)


class TestDefault(StrategyTestSuite):
    strategy = "default"
    overrides = ("model.hidden_units=[8]",)


class TestMirrored(StrategyTestSuite):
    strategy = "mirrored"
    # strategy.num_workers does not make input pipelines: mirrored runs one (mode=shards used to split 2 ways)
    overrides = ("hardware.logical_devices=2", "strategy.num_workers=2", "model.hidden_units=[8]")
    trains = False  # tests/test_train.py trains it


class TestMultiWorker(StrategyTestSuite):
    strategy = "multi_worker"
    overrides = ("strategy.num_workers=2",)
    trains = False  # launches processes: tests/test_multi_worker.py


class TestTPU(StrategyTestSuite):
    strategy = "tpu"  # v4-32: 4 hosts, one input pipeline each, whatever strategy.num_workers says
    overrides = ("hardware.topology=v4-32", "data.batch_size=256")
    trains = False  # no TPU here: tests/test_tpu.py fakes one


class TestSavedModel(ExporterTestSuite):
    exporter = "saved_model"
