"""Cloud TPUs: a TPU VM's own chips (`local`), a named Cloud TPU, or a `grpc://host:port` worker.

The connection is made once per process (the TPU system can be initialised only once) and shared by
the hardware target (which connects before any op runs) and `strategy=tpu` (which builds the
TPUStrategy on the same resolver).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from scaleflow.config.schema import HardwareConfig, bounded, choice
from scaleflow.errors import ConfigError, ScaleflowError
from scaleflow.hardware.base import Hardware

log = logging.getLogger("scaleflow")


@dataclass(frozen=True)
class Generation:
    """Approximate public figures for one TPU generation (per replica: a core on v2/v3, a chip on
    v4 and later, where two cores act as one 'megacore')."""

    peak_flops: float  # bf16 FLOP/s per replica
    memory_bytes: float  # HBM per replica
    ici_bandwidth_bytes_s: float  # inter-chip interconnect, per replica
    replicas_per_host: int
    name_counts: str  # what the number in "v3-8" counts: "cores" or "chips"
    cores_per_replica: int = 1


GENERATIONS = {
    "v2": Generation(22.5e12, 8 * 2**30, 6.2e10, 8, "cores"),
    "v3": Generation(61.5e12, 16 * 2**30, 8.2e10, 8, "cores"),
    "v4": Generation(275e12, 32 * 2**30, 2.25e11, 4, "cores", cores_per_replica=2),
    "v5e": Generation(197e12, 16 * 2**30, 2.0e11, 8, "chips"),
    "v5p": Generation(459e12, 95 * 2**30, 6.0e11, 4, "cores", cores_per_replica=2),
    "v6e": Generation(918e12, 32 * 2**30, 4.0e11, 8, "chips"),
}
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e"}
ICI_LATENCY_S = 5e-6


@dataclass(frozen=True)
class Slice:
    """A TPU slice from its topology name, e.g. `v3-8`: 8 replicas on 1 host."""

    topology: str
    generation: str
    replicas: int
    hosts: int
    figures: Generation

    @property
    def replicas_per_host(self) -> int:
        return self.replicas // self.hosts


def parse_topology(topology: str) -> Slice:
    """`v3-8`, `v4-32`, `v5e-8`, `v5litepod-16` ... -> Slice. ConfigError for anything else."""
    m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", str(topology or "").strip().lower())
    generation = ALIASES.get(m.group(1), m.group(1)) if m else None
    if generation not in GENERATIONS:
        examples = "v2-8, v3-8, v3-32, v4-8, v5e-8, v5p-8, v6e-8"
        raise ConfigError("hardware.topology", topology, f"<generation>-<count>, e.g. {examples}",
                          f"Known generations: {', '.join(GENERATIONS)}")
    g = GENERATIONS[generation]
    count = int(m.group(2))
    replicas = count // g.cores_per_replica if g.name_counts == "cores" else count
    if replicas < 1:
        raise ConfigError("hardware.topology", topology, f"at least {g.cores_per_replica} cores")
    hosts = max(1, -(-replicas // g.replicas_per_host))
    if generation in ("v5e", "v6e") and replicas > 8:
        hosts = replicas // 4  # multi-host v5e/v6e slices have 4 chips per host
    return Slice(topology, generation, replicas, hosts, g)


@dataclass
class TPUConfig(HardwareConfig):
    # local: this TPU VM's chips; a Cloud TPU name; or grpc://host:port (a TPU worker).
    tpu: Optional[str] = "local"
    topology: Optional[str] = "v3-8"
    precision: str = choice("bfloat16", "float32", "bfloat16", "float16")
    # Planner figures: null takes the topology's generation figures (see GENERATIONS).
    peak_flops: Optional[float] = bounded(None, min=0.0)
    memory_bytes: Optional[float] = bounded(None, min=0.0)
    bandwidth_bytes_s: Optional[float] = bounded(None, min=0.0)
    latency_s: Optional[float] = bounded(None, min=0.0)
    inter_host_bandwidth_bytes_s: Optional[float] = bounded(None, min=0.0)
    inter_host_latency_s: Optional[float] = bounded(None, min=0.0)
    step_overhead_s: float = bounded(1.0e-4, min=0.0)
    update_bytes_s: float = bounded(1.0e12, min=0.0)  # HBM, order of magnitude (not measured here)


def describe_address(address: str) -> str:
    if address == "local":
        return "the TPU chips of this machine (tpu=local: a Cloud TPU VM)"
    if address.startswith("grpc://"):
        return f"a TPU worker at {address}"
    return f"the Cloud TPU named {address!r} (through the GCE metadata server and Cloud TPU API)"


HOW_TO_POINT = ("Point scaleflow at a TPU with hardware.tpu=local (on a TPU VM), hardware.tpu=<name> "
                "(a Cloud TPU in this project/zone), hardware.tpu=grpc://host:8470, or the TPU_NAME "
                "environment variable; or add strategy.fallback=true to run on the devices present")

_connections: dict[str, Any] = {}  # address -> TPUClusterResolver; the TPU system initialises once


def connect(cfg) -> Any | None:
    """The TPUClusterResolver for `hardware.tpu`, connected and with the TPU system initialised.

    Returns None when no TPU is reachable and `strategy.fallback` is true (after a warning); raises
    ScaleflowError (no traceback for the user) otherwise. Never hangs on a dead grpc:// address:
    gRPC fail-fast is switched on first (without it, a connection to a dead address blocks forever).
    """
    address = str(cfg.hardware.tpu or "local")
    if address in _connections:
        return _connections[address]
    if address.startswith("grpc://"):
        os.environ.setdefault("GRPC_FAIL_FAST", "true")
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # noqa: BLE001 - NotFoundError, UnavailableError, URLError, ValueError...
        # The first sentence says what went wrong; the rest is TensorFlow's internals.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:160]
        message = f"no TPU found: looked for {describe_address(address)} and got {type(e).__name__}: {first}"
        if cfg.strategy.get("fallback", False):
            log.warning("%s. strategy.fallback=true: running on the devices present instead, NOT on a TPU", message)
            _connections[address] = None
            return None
        raise ScaleflowError(f"{message}. {HOW_TO_POINT}.") from None
    _connections[address] = resolver
    return resolver


class TPU(Hardware):
    """A TPU slice: `hardware.tpu` says where (local | name | grpc://host:port), `hardware.topology`
    what (v3-8, v4-8, v5e-8 ...; the planner's figures follow it). Training is bf16 by default.

    Example: `python -m scaleflow strategy=tpu hardware.tpu=grpc://10.0.0.2:8470 hardware.topology=v3-8`
    """

    name = "tpu"
    Config = TPUConfig
    required_strategy = "tpu"  # TPUStrategy is the only way to run on it
    steps_per_execution = 128  # host round trips are costly: many steps per call
    per_replica_batch_multiple = 8  # the TPU's matrix units tile batches by 8

    @classmethod
    def validate(cls, cfg) -> None:
        parse_topology(cfg.hardware.topology)
        if not str(cfg.hardware.tpu or "").strip():
            raise ConfigError("hardware.tpu", cfg.hardware.tpu, "local, a Cloud TPU name or grpc://host:port")

    def figures(self, cfg) -> dict:
        """Planner figures: the config's where set, else the topology's generation figures."""
        hw = cfg.hardware
        s = parse_topology(hw.topology)
        g = s.figures
        table = {"peak_flops": g.peak_flops, "memory_bytes": g.memory_bytes,
                 "bandwidth_bytes_s": g.ici_bandwidth_bytes_s, "latency_s": ICI_LATENCY_S,
                 # hosts of one slice talk over the same ICI
                 "inter_host_bandwidth_bytes_s": g.ici_bandwidth_bytes_s, "inter_host_latency_s": ICI_LATENCY_S}
        out = {k: (hw.get(k) if hw.get(k) is not None else v) for k, v in table.items()}
        out.update(hosts=s.hosts, devices_per_host=s.replicas_per_host, precision=hw.precision,
                   step_overhead_s=hw.step_overhead_s, update_bytes_s=hw.update_bytes_s, shared_compute=False,
                   single_host=False)
        return out

    def describe_figures(self, cfg) -> str:
        return f"hardware=tpu topology {cfg.hardware.topology}"

    def configure(self, cfg) -> dict:
        resolver = connect(cfg)
        if resolver is None:  # fallback: configure the CPU as cfg.hardware.logical_devices says
            from scaleflow.hardware.cpu import CPU

            facts = CPU().configure(cfg)
            return {**facts, "fallback": f"no TPU at hardware.tpu={cfg.hardware.tpu}; ran on the CPU"}
        import tensorflow as tf

        return {"devices": [d.name for d in tf.config.list_logical_devices("TPU")],
                "tpu": str(cfg.hardware.tpu), "topology": cfg.hardware.topology}
