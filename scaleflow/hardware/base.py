"""The hardware extension point.

A hardware target says what a machine is: `configure` prepares TensorFlow's devices before any op
runs (logical CPU devices, GPU memory growth, TPU connection), and `figures` states what the planner
needs (hosts, devices, peak FLOP/s, memory, bandwidth, latency, default precision), without
TensorFlow.

Example:

    class Laptop(Hardware):
        name = "laptop"

        def configure(self, cfg):
            import tensorflow as tf
            return {"devices": [d.name for d in tf.config.list_logical_devices("CPU")]}

    # pyproject.toml:  [project.entry-points."scaleflow.hardware"]  laptop = "my_pkg.laptop:Laptop"
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from scaleflow.config.schema import HardwareConfig

FIGURE_KEYS = ("peak_flops", "memory_bytes", "bandwidth_bytes_s", "latency_s", "inter_host_bandwidth_bytes_s",
               "inter_host_latency_s", "step_overhead_s", "update_bytes_s")


class Hardware(abc.ABC):
    """Base class of every hardware target.

    Class attributes:
        name: the option name (`hardware=<name>`), equal to the entry point's name.
        Config: the dataclass typing the `hardware` node (extend `HardwareConfig`).
        conf: `pkg://...` search path of a plugin's config files, or None.
        required_strategy: the one strategy this hardware runs under (a TPU: "tpu"), or None.
        steps_per_execution: steps per training-function call that `trainer.steps_per_execution=auto`
            aims for (the largest throughput lever on CPU: ~2.4x on a small MLP).
        per_replica_batch_multiple: what the planner rounds a recommended per-replica batch to.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = HardwareConfig
    conf: ClassVar[str | None] = None
    required_strategy: ClassVar[str | None] = None
    steps_per_execution: ClassVar[int] = 32
    per_replica_batch_multiple: ClassVar[int] = 1

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Cross-field rules of this target, before TensorFlow is imported: raise ConfigError."""

    @abc.abstractmethod
    def configure(self, cfg: Any) -> dict:
        """Set TensorFlow's device configuration, before any op runs.

        Args:
            cfg: the validated config (`cfg.hardware` is this target's node).
        Returns:
            Facts for run.json's `strategy` block, e.g. {"devices": ["/device:CPU:0"]}.
        """

    def figures(self, cfg: Any) -> dict:
        """The planner's figures for this target, without TensorFlow.

        Args:
            cfg: the composed config.
        Returns:
            A dict with hosts, devices_per_host, FIGURE_KEYS, precision, shared_compute (the devices
            of a host share one compute pool) and single_host (more replicas stay on this machine).
            The default reads them from the config node, one host with `num_gpus` devices (1 if -1).
        """
        hw = cfg.hardware
        devices = hw.get("num_gpus", -1)
        return {**{k: hw.get(k) for k in FIGURE_KEYS}, "hosts": 1, "devices_per_host": max(1, devices),
                "precision": hw.precision, "shared_compute": False, "single_host": True}

    def describe_figures(self, cfg: Any) -> str:
        """Where `figures` come from, for the plan's header."""
        return f"hardware={cfg.hardware.name} config"


def steps_per_execution(value, steps_per_epoch: int, hardware: str, cap: int | None = None) -> int:
    """Steps per tf.function call. `auto`: what the hardware says pays off (the largest speed lever
    on CPU: ~2.4x on a small MLP); an integer: at most that many.

    Keras runs whole calls: over an input that repeats (every scaleflow pipeline does, so all workers
    run the same number of steps), a call that crosses the end of the epoch runs on into the next
    epoch's records (41 planned steps ran as 64). So the value is the largest divisor of the epoch's
    train steps not above the target (or `cap`, a strategy's limit): every epoch then trains on
    exactly its planned records. (Validation runs in calls of the same size: its last call may re-read
    up to steps_per_execution - 1 batches of validation records; training is not affected.)"""
    if value == "auto":
        from scaleflow import registry

        target = registry.get("hardware", hardware).steps_per_execution  # the hardware says what pays off
    else:
        target = int(value)
    if cap:
        target = min(target, cap)
    return max(d for d in range(1, max(1, min(target, steps_per_epoch)) + 1) if steps_per_epoch % d == 0)


def describe_steps_per_execution(value, chosen: int, steps_per_epoch: int, hardware: str, cap: int | None) -> dict:
    """run.json's `tuning.steps_per_execution`: the value `steps_per_execution` chose and why."""
    if value == "auto":
        from scaleflow import registry

        why = f"auto: hardware={hardware} aims for {registry.get('hardware', hardware).steps_per_execution}"
    else:
        why = f"trainer.steps_per_execution={value}"
    if cap:
        why += f", capped at {cap} by the strategy"
    why += f"; the largest divisor of the epoch's {steps_per_epoch} steps not above it"
    return {"value": chosen, "source": why}
