"""`data.service`: where the input pipeline runs, from the config alone (no TensorFlow, no network).

    off          in the training process (the default)
    local        a tf.data service dispatcher and `data.service_workers` workers, started for the run as
                 separate processes on 127.0.0.1 (scaleflow/data/service.py) and ended with it
    <host:port>  join a running dispatcher (`grpc://` prefix allowed); it must have been started with a
                 fixed worker list (DispatcherConfig.worker_addresses), which static sharding needs

Validation, the default worker count and the plan's / run.json's description of where input runs
live here so that `mode=plan` and config validation never import TensorFlow.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from scaleflow import registry
from scaleflow.errors import ConfigError

ALLOWED = "off, local or <host:port> of a tf.data service dispatcher (e.g. 10.0.0.5:5050)"
# The stream of batches each input pipeline trains on is split over the service workers by
# ShardingPolicy.HINT (a shard op scaleflow places itself) and put back in stream order by the
# consumer: the pipeline yields exactly the batches, in exactly the order, it yields in process.
SHARDING = "static (HINT: element i of each pipeline to service worker i mod N, read back in stream order)"
MAX_DEFAULT_WORKERS = 8

_HOST = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?)$")


@dataclass(frozen=True)
class ServiceSpec:
    """What `data.service` asks for: kind 'off' | 'local' | 'remote'; host and port for 'remote'."""

    kind: str
    host: str | None = None
    port: int | None = None

    @property
    def address(self) -> str | None:
        return f"{self.host}:{self.port}" if self.kind == "remote" else None


def parse(value) -> ServiceSpec:
    """The `data.service` value as a ServiceSpec; a ConfigError naming the key for anything else.

    Example:
        >>> parse("grpc://127.0.0.1:5050")
        ServiceSpec(kind='remote', host='127.0.0.1', port=5050)
    """
    if value is None or value is False or str(value).strip().lower() in ("off", "false", "none", ""):
        return ServiceSpec("off")
    text = str(value).strip()
    if text.lower() == "local":
        return ServiceSpec("local")
    address = text[len("grpc://"):] if text.startswith("grpc://") else text
    if "://" in address:
        raise ConfigError("data.service", value, ALLOWED, "Only the grpc:// protocol is supported")
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ConfigError("data.service", value, ALLOWED, "An address needs a port: <host>:<port>")
    if not _HOST.match(host):
        raise ConfigError("data.service", value, ALLOWED, f"{host!r} is not a host name or IP address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError("data.service", value, ALLOWED, f"The port must be an integer in 1..65535, not {port!r}")
    return ServiceSpec("remote", host.strip("[]"), int(port))


def training_processes_here(cfg) -> int:
    """Training processes this host runs (each starts its own local service), as the strategy says
    (`Strategy.local_processes`: before a launch, the processes it will start here)."""
    name = (cfg.get("strategy") or {}).get("name")
    if name not in registry.names("strategy"):
        return 1  # validation names the unknown strategy
    return registry.get("strategy", name).local_processes(cfg, os.environ)


def default_workers(cfg, cores: int | None = None) -> int:
    """Service workers per training process when `data.service_workers` is null: the cores this
    process may use, shared by the training processes on this host, one left for training itself,
    at least one and at most MAX_DEFAULT_WORKERS."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
    per_process = max(1, cores // training_processes_here(cfg))
    return max(1, min(MAX_DEFAULT_WORKERS, per_process - 1))


def workers(cfg) -> int | None:
    """Service workers a local service starts (None for off / remote: the dispatcher knows)."""
    if parse(cfg.data.get("service")).kind != "local":
        return None
    configured = cfg.data.get("service_workers")
    return int(configured) if configured is not None else default_workers(cfg)


def check_config(cfg) -> None:
    """The `data.service*` keys, before TensorFlow: syntax, and what cannot run on the service."""
    data = cfg.data
    spec = parse(data.get("service"))
    if data.get("service_workers") is not None and spec.kind != "local":
        raise ConfigError("data.service_workers", data.service_workers, "null unless data.service=local",
                          "A joined dispatcher (data.service=<host:port>) has its own workers" if spec.kind == "remote"
                          else "Set data.service=local to start service workers")
    if spec.kind == "off":
        return
    if data.get("reshuffle_each_epoch"):
        raise ConfigError("data.reshuffle_each_epoch", True, f"false with data.service={data.service}",
                          "The per-epoch repartition runs Python code (tf.numpy_function), which cannot run on "
                          "a tf.data service worker; use data.service=off")


def check_in_process_reader(cfg, reader: str, instead: str) -> None:
    """A reader that runs Python (tf.numpy_function, from_generator) cannot run on a tf.data service
    worker: refused here, before TensorFlow and before any service process starts."""
    if parse(cfg.data.get("service")).kind != "off":
        raise ConfigError("data.service", cfg.data.service, f"off with {reader}",
                          f"This reader runs Python code, which a tf.data service worker cannot run; {instead}")


def describe(cfg, num_pipelines: int | None = None) -> dict:
    """Where input runs, for `mode=plan` and run.json (`data.input`)."""
    spec = parse(cfg.data.get("service"))
    if spec.kind == "off":
        return {"runs": "in-process", "service": "off"}
    out = {"runs": "tf.data service", "service": spec.kind,
           "dispatcher": spec.address if spec.kind == "remote" else "127.0.0.1:<free port>, started for the run",
           "workers": workers(cfg) if spec.kind == "local" else "the dispatcher's fixed worker list",
           "sharding": SHARDING}
    if num_pipelines is not None:
        out["jobs"] = f"one per input pipeline and split ({num_pipelines} pipeline(s)), named per run"
    if spec.kind == "local" and training_processes_here(cfg) > 1:
        out["per_process"] = (f"each of the {training_processes_here(cfg)} training processes starts its own "
                              "dispatcher and workers for its own pipeline")
    return out


def render(info: dict) -> str:
    """One line for the plan's text."""
    if info["runs"] == "in-process":
        return "input runs in-process (data.service=off)"
    return (f"input runs on the tf.data service ({info['service']}): dispatcher {info['dispatcher']}, "
            f"workers {info['workers']}, sharding {info['sharding']}")


@dataclass(frozen=True)
class ServiceTarget:
    """A running tf.data service this run's pipelines use (scaleflow/cluster/data_service.py).

    Args:
        kind: 'local' (started for this run) or 'remote' (joined).
        address: the dispatcher's host:port.
        workers: the service workers every job is split over (measured by the probe job).
        job_prefix: unique per run attempt: a restarted run never rejoins an old job.
        pids: the local service's processes (dispatcher first), empty when joined.
        isolation: how the local service is kept off the network, for run.json.
    """

    kind: str
    address: str
    workers: int
    job_prefix: str
    pids: tuple[int, ...] = ()
    isolation: str = ""

    def job(self, split: str, pipeline: int) -> str:
        return f"{self.job_prefix}-{split}-p{pipeline}"

    def report(self, training_processes: int = 1) -> dict:
        out = {"runs": "tf.data service", "service": self.kind, "dispatcher": self.address,
               "workers": self.workers, "sharding": SHARDING, "jobs": f"{self.job_prefix}-<split>-p<pipeline>-<n>"}
        if self.kind == "local" and training_processes > 1:
            out["per_process"] = (f"each of the {training_processes} training processes runs its own service for its "
                                  "own pipeline (this is the chief's; logs in data_service-<rank>/)")
        if self.isolation:
            out["isolation"] = self.isolation
        return out
