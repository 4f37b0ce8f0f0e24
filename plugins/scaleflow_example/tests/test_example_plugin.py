"""The example plugin passes scaleflow's shared suites for what it provides: a model and a dataset."""

from __future__ import annotations

from scaleflow.testing import DatasetTestSuite, ModelTestSuite


class TestLinear(ModelTestSuite):
    model = "linear"
    overrides = ("data=moons", "data.num_examples=256")


class TestMoons(DatasetTestSuite):
    dataset = "moons"
    overrides = ("data.num_examples=200", "data.num_features=3")
