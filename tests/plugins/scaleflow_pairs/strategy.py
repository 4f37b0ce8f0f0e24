"""`strategy=pairs`: data parallelism over a pair of logical CPU devices in one process.

It claims a CPU split into exactly two logical devices a little more strongly than `mirrored` does,
so `strategy=auto` picks it whenever it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaleflow.config.schema import StrategyConfig
from scaleflow.strategies.base import CLAIM_DEVICES, Claim, Strategy, TFDistribution, Topology


@dataclass
class PairsConfig(StrategyConfig):
    pass


class Pairs(Strategy):
    """Two replicas on /cpu:0 and /cpu:1, one input pipeline.

    Example: `python -m scaleflow strategy=pairs hardware.logical_devices=2`
    """

    name = "pairs"
    Config = PairsConfig
    conf = "pkg://scaleflow_pairs.conf"
    implies = {"hardware.logical_devices": "2"}

    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        return Topology(hosts=1, processes=1, replicas=2, pipelines=1)

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        if cfg.hardware.name == "cpu" and cfg.hardware.get("logical_devices") == 2:
            return Claim(CLAIM_DEVICES + 1, "a CPU split into a pair of logical devices")
        return None

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str]:
        return 2, "the pair of replicas"

    def create(self, cfg) -> TFDistribution:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                                  cross_device_ops=tf.distribute.ReductionToOneDevice())
        return TFDistribution(self.name, strategy)
