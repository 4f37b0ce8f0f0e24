"""The hardware extension point.

A hardware target says what a machine is: `configure` prepares TensorFlow's devices before any op
runs (logical CPU devices, GPU memory growth, TPU connection), and its config carries the figures
the planner uses (peak FLOP/s, memory, bandwidth, latency, default precision).
"""

from __future__ import annotations

from typing import ClassVar

from scaleflow.config.schema import HardwareConfig


class Hardware:
    name: ClassVar[str]
    Config: ClassVar[type] = HardwareConfig

    def configure(self, cfg) -> dict:
        """Set TensorFlow's device configuration; return facts for run.json (e.g. device names)."""
        return {}
