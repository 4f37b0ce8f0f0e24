"""What the hardware is (figures per device) and how a strategy lays replicas out on it.

Pure Python: no TensorFlow. The hardware target states its figures (`Hardware.figures`), the
strategy its layout (`Strategy.topology`); `plan.profile` (a YAML written by `mode=calibrate`)
overrides the figures.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from scaleflow import registry
from scaleflow.errors import ConfigError
from scaleflow.strategies.base import Topology

from scaleflow.hardware.base import FIGURE_KEYS  # noqa: E402 - re-exported for the planner


@dataclass(frozen=True)
class Figures:
    """One hardware target in the planner's terms.

    Args:
        hosts / devices_per_host: what the hardware offers.
        peak_flops: FLOP/s of one device (for `cpu`: the whole CPU, shared by its logical devices).
        shared_compute: True when the devices of a host share one compute pool (logical CPU devices):
            each replica then gets peak_flops / replicas on the host.
        single_host: True when the target is this one machine (more replicas stay on it).
        required_strategy: the one strategy this hardware runs under (a TPU: tpu), or None.
        source: where the figures come from (config, topology table, calibration profile).
    """

    hardware: str
    hosts: int
    devices_per_host: int
    peak_flops: float
    memory_bytes: float
    bandwidth_bytes_s: float
    latency_s: float
    inter_host_bandwidth_bytes_s: float
    inter_host_latency_s: float
    step_overhead_s: float
    update_bytes_s: float  # what an optimizer update streams its state at (memory bandwidth)
    precision: str
    shared_compute: bool
    source: str
    single_host: bool = True
    required_strategy: str | None = None
    batch_multiple: int = 1  # the per-replica batch the hardware wants a multiple of (TPU: 8)

    @property
    def devices(self) -> int:
        return self.hosts * self.devices_per_host


def load_profile(path: str) -> dict:
    """The figures of a hardware profile written by `mode=calibrate`."""
    from omegaconf import OmegaConf

    if not os.path.isfile(os.path.expanduser(path)):
        raise ConfigError("plan.profile", path, "the path of a hardware profile YAML written by mode=calibrate")
    node = OmegaConf.to_container(OmegaConf.load(os.path.expanduser(path)))
    return {k: float(v) for k, v in node.items() if k in FIGURE_KEYS and v is not None}


def figures(cfg) -> Figures:
    hw = cfg.hardware
    target = registry.get("hardware", hw.name)
    f = dict(target().figures(cfg))
    source = target().describe_figures(cfg)
    profile = cfg.get("plan", {}).get("profile")
    if profile:
        f.update(load_profile(profile))
        source += f" + calibration profile {profile}"
    return Figures(hardware=hw.name, source=source, required_strategy=target.required_strategy,
                   batch_multiple=target.per_replica_batch_multiple,
                   **{k: f[k] for k in ("hosts", "devices_per_host", *FIGURE_KEYS, "precision", "shared_compute",
                                        "single_host")})


@dataclass(frozen=True)
class Layout:
    """A strategy's topology as the planner reports it: `workers` processes on `hosts` hosts,
    `replicas` in all, `pipelines` input pipelines (each reads its own shard of the records)."""

    strategy: str
    hosts: int
    workers: int
    replicas: int
    pipelines: int
    reason: str = ""
    devices_per_replica: int = 1

    @property
    def replicas_per_host(self) -> int:
        return math.ceil(self.replicas / self.hosts)

    @property
    def topology(self) -> Topology:
        return Topology(self.hosts, self.workers, self.replicas, self.pipelines, self.devices_per_replica)

    @classmethod
    def of(cls, strategy: str, topology: Topology, reason: str = "") -> "Layout":
        return cls(strategy, topology.hosts, topology.processes, topology.replicas, topology.pipelines, reason,
                   topology.devices_per_replica)

    def report(self) -> dict:
        return asdict(self)


def resolve_strategy(cfg) -> tuple[str, str]:
    """(the strategy that really runs, why): the configured one, or the one it chooses (auto)."""
    return registry.get("strategy", cfg.strategy.name).resolved(cfg)


def layout(cfg, figs: Figures, strategy: str | None = None, reason: str = "") -> Layout:
    """The layout `strategy` (default: the config's, `auto` resolved) gives on this hardware, as the
    strategy itself states it."""
    if strategy is None:
        strategy, reason = resolve_strategy(cfg)
    return Layout.of(strategy, registry.get("strategy", strategy).topology(cfg, figs), reason)


def with_replicas(base: Layout, replicas: int, figs: Figures, cfg=None) -> Layout:
    """The same strategy scaled to `replicas` (as the strategy scales: `Strategy.scaled`)."""
    scaled = registry.get("strategy", base.strategy).scaled(cfg, figs, base.topology, replicas)
    return Layout.of(base.strategy, scaled, base.reason)
