"""One device, no distribution."""

from __future__ import annotations

from scaleflow.strategies.base import Distribution, Strategy, TFDistribution


class Default(Strategy):
    """tf.distribute's default strategy: one replica on the first device.

    Example: `python -m scaleflow strategy=default`
    """

    name = "default"

    def create(self, cfg) -> Distribution:
        import tensorflow as tf

        return TFDistribution(self.name, tf.distribute.get_strategy())
