"""One device, no distribution."""

from __future__ import annotations

from scaleflow.strategies.base import CLAIM_ANYWHERE, Claim, Distribution, Strategy, TFDistribution, Topology


class Default(Strategy):
    """tf.distribute's default strategy: one replica on the first device.

    Example: `python -m scaleflow strategy=default`
    """

    name = "default"

    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        return Topology(hosts=1, processes=1, replicas=1, pipelines=1)

    @classmethod
    def claim(cls, cfg, environment) -> Claim:
        return Claim(CLAIM_ANYWHERE, "one device" + (" (1 GPU)" if environment.num_gpus == 1 else ""))

    def create(self, cfg) -> Distribution:
        import tensorflow as tf

        return TFDistribution(self.name, tf.distribute.get_strategy())
