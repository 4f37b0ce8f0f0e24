"""What the hardware is (figures per device) and how a strategy lays replicas out on it.

Pure Python: no TensorFlow. A hardware target may provide `figures(hw)` (tpu, cluster do); others
are read from their config node. `plan.profile` (a YAML written by `mode=calibrate`) overrides them.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace

from scaleflow import registry
from scaleflow.errors import ConfigError

FIGURE_KEYS = ("peak_flops", "memory_bytes", "bandwidth_bytes_s", "latency_s", "inter_host_bandwidth_bytes_s",
               "inter_host_latency_s", "step_overhead_s")


@dataclass(frozen=True)
class Figures:
    """One hardware target in the planner's terms.

    Args:
        hosts / devices_per_host: what the hardware offers.
        peak_flops: FLOP/s of one device (for `cpu`: the whole CPU, shared by its logical devices).
        shared_compute: True when the devices of a host share one compute pool (logical CPU devices):
            each replica then gets peak_flops / replicas on the host.
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
    precision: str
    shared_compute: bool
    source: str

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
    if hasattr(target, "figures"):
        kwargs = {"num_workers": cfg.strategy.num_workers} if hw.name == "cluster" else {}
        f = dict(target.figures(hw, **kwargs))
        source = f"hardware={hw.name}" + (f" topology {hw.topology}" if hw.name == "tpu" else "")
    else:
        f = {k: hw.get(k) for k in FIGURE_KEYS}
        devices = hw.logical_devices if hw.name == "cpu" else (hw.num_gpus if hw.get("num_gpus", -1) > 0 else 1)
        f.update(hosts=1, devices_per_host=max(1, devices), precision=hw.precision,
                 shared_compute=hw.name == "cpu")
        source = f"hardware={hw.name} config"
    profile = cfg.get("plan", {}).get("profile")
    if profile:
        f.update(load_profile(profile))
        source += f" + calibration profile {profile}"
    return Figures(hardware=hw.name, source=source, **{k: f[k] for k in (
        "hosts", "devices_per_host", *FIGURE_KEYS, "precision", "shared_compute")})


@dataclass(frozen=True)
class Layout:
    """How a strategy places replicas: `workers` processes on `hosts` hosts, `replicas` in all,
    `pipelines` input pipelines (each reads its own shard of the records)."""

    strategy: str
    hosts: int
    workers: int
    replicas: int
    pipelines: int
    reason: str = ""

    @property
    def replicas_per_host(self) -> int:
        return math.ceil(self.replicas / self.hosts)

    def report(self) -> dict:
        return asdict(self)


def resolve_strategy(cfg) -> tuple[str, str]:
    name = cfg.strategy.name
    if name != "auto":
        return name, f"strategy={name}"
    from scaleflow.strategies.auto import resolve

    return resolve(cfg)


def layout(cfg, figs: Figures, strategy: str | None = None, reason: str = "") -> Layout:
    """The layout `strategy` (default: the config's, `auto` resolved) gives on this hardware."""
    if strategy is None:
        strategy, reason = resolve_strategy(cfg)
    on_cpu_host = figs.hardware in ("cpu", "gpu")  # one machine: every worker shares it
    num_workers = cfg.strategy.num_workers
    if strategy == "default":
        return Layout(strategy, 1, 1, 1, 1, reason)
    if strategy == "mirrored":
        return Layout(strategy, 1, 1, figs.devices_per_host, 1, reason)
    if strategy == "tpu":
        return Layout(strategy, figs.hosts, 1, figs.devices, figs.hosts, reason)
    workers = num_workers if num_workers > 1 or on_cpu_host else figs.hosts
    hosts = 1 if on_cpu_host else min(workers, figs.hosts) or 1
    if strategy == "multi_worker":
        return Layout(strategy, hosts, workers, workers * figs.devices_per_host, workers, reason)
    # horovod and other one-replica-per-process strategies
    return Layout(strategy, hosts, workers, workers, workers, reason)


def with_replicas(base: Layout, replicas: int, figs: Figures) -> Layout:
    """The same strategy scaled to `replicas` (hosts fill up one after the other)."""
    per_host = figs.devices_per_host if figs.hardware not in ("cpu", "gpu") else replicas
    hosts = max(1, math.ceil(replicas / max(1, per_host)))
    workers = 1 if base.workers == 1 else max(1, replicas // max(1, base.replicas // base.workers))
    pipelines = hosts if base.strategy == "tpu" else workers
    return replace(base, hosts=hosts, workers=workers, replicas=replicas, pipelines=pipelines)
