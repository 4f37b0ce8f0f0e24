"""The Horovod plugin passes scaleflow's shared strategy suite. Training one rank in this process
needs Horovod built for the installed TensorFlow (`make horovod`); without it that test is skipped,
unless SCALEFLOW_REQUIRE_HOROVOD is set (CI), where a missing build fails."""

from __future__ import annotations

import os

import pytest

from scaleflow.errors import ScaleflowError
from scaleflow.testing import StrategyTestSuite


def horovod_missing() -> str | None:
    from scaleflow_horovod import install

    try:
        install.check()
    except ScaleflowError as e:
        return str(e)
    return None


class TestHorovodOneRank(StrategyTestSuite):
    strategy = "horovod"

    def test_it_trains(self, tmp_path):
        missing = horovod_missing()
        if missing and not os.environ.get("SCALEFLOW_REQUIRE_HOROVOD"):
            pytest.skip(missing)
        super().test_it_trains(tmp_path)


class TestHorovodFourRanks(StrategyTestSuite):
    strategy = "horovod"
    overrides = ("strategy.num_workers=4",)
    trains = False  # horovodrun with 4 ranks is tests/test_horovod.py's job
