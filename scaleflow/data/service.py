"""The tf.data service of one run (`data.service`): started (local) or joined (<host:port>) before the
input pipelines are built, ended when the run ends, however it ends. The processes and the network
checks are in scaleflow/cluster/data_service.py; the pipelines' side is `input.through_service`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from typing import Callable, Iterator

from scaleflow.cluster.data_service import LocalService, ServiceFailed, probe, wait_reachable, watch
from scaleflow.data.service_config import ServiceTarget, parse, workers as configured_workers

log = logging.getLogger("scaleflow")


def log_dir(run_dir: str, rank: int = 0) -> str:
    """Where a training process's local service writes its logs and pids (one dir per process)."""
    return os.path.join(run_dir, "data_service" if not rank else f"data_service-{rank}")


def _isolation(cfg) -> tuple[object | None, str]:
    """(a private network namespace for the service, or None; what run.json says about it). TF 2.21's
    service servers listen on every interface: they run where nothing outside can reach them."""
    from scaleflow.cluster import netns

    if netns.loopback_only():
        return None, "this process's network namespace has only a loopback device (nothing outside reaches it)"
    ns = netns.private_network(cfg, "the tf.data service's dispatcher and workers")
    if ns is None:
        why = "strategy.isolate_network=false" if not cfg.strategy.get("isolate_network", True) else \
            f"no private network namespace here ({netns.unavailable_reason})"
        return None, f"none: {why}; the service listens on every interface of this host"
    return ns, "a private network namespace (loopback only), reached through a relay on 127.0.0.1"


@contextlib.contextmanager
def for_run(cfg, run_dir: str, files=(), log_dir: str | None = None,
            on_failure: Callable[[str], None] | None = None) -> Iterator[ServiceTarget | None]:
    """The run's tf.data service while the block runs (None for data.service=off); a local service
    is ended when the block ends, however it ends.

    Args:
        cfg: the run's config.
        run_dir: the run dir (names the jobs).
        files: the dataset's files (encrypted ones cannot be read by a service worker).
        log_dir: where a local service writes its logs and pids (default: <run_dir>/data_service).
        on_failure: records a failure (run.json) before the process exits when a service process dies.
    """
    spec = parse(cfg.data.get("service"))
    if spec.kind == "off":
        yield None
        return
    from scaleflow.security.crypto import is_encrypted

    encrypted = [f for f in files if is_encrypted(f)]
    if encrypted:
        from scaleflow.errors import ConfigError

        raise ConfigError("data.service", cfg.data.service, "off for encrypted inputs",
                          f"{encrypted[0]} is decrypted into this process's memory only, which a tf.data service "
                          "worker cannot read")
    timeout = float(cfg.data.get("service_timeout_s") or 60.0)
    prefix = f"scaleflow-{os.path.basename(os.path.abspath(run_dir))}-{uuid.uuid4().hex[:10]}"
    if spec.kind == "remote":
        wait_reachable(spec.host, spec.port, timeout)
        n = probe(spec.address, timeout, f"{prefix}-probe")
        log.info("data.service: joined the tf.data service at %s (%d worker(s))", spec.address, n)
        yield ServiceTarget("remote", spec.address, n, prefix)
        return
    n = configured_workers(cfg)
    started = time.monotonic()
    ns, isolation = _isolation(cfg)
    service = LocalService(n, log_dir or os.path.join(run_dir, "data_service"), timeout, netns=ns)
    stop_watch = threading.Event()
    try:
        service.start()
        measured = probe(service.address, timeout, f"{prefix}-probe")
        if measured != n:
            raise ServiceFailed(f"data.service=local: the probe job saw {measured} workers, {n} were started")
        log.info("data.service=local: dispatcher %s and %d worker(s) (pids %s) ready in %.1f s", service.address, n,
                 " ".join(map(str, service.pids)), time.monotonic() - started)
        threading.Thread(target=watch, args=(service, on_failure, stop_watch), name="data-service-watch",
                         daemon=True).start()
        yield ServiceTarget("local", service.address, n, prefix, service.pids, isolation)
    finally:
        stop_watch.set()
        service.stop()
        log.info("data.service=local: the service processes ended")


def explain_failure(error: BaseException, target: ServiceTarget | None) -> ServiceFailed | None:
    """A one-line error for a training step that failed because of the tf.data service (a service
    process died, a worker fell behind), instead of TensorFlow's graph trace; None when it was not."""
    if target is None:
        return None
    markers = ("data.service job", "tf.data service", "Failed to get element from worker", "data service")
    line = next((raw.strip() for raw in str(error).splitlines() if any(m in raw for m in markers)), None)
    if line is None:
        return None
    line = line.removeprefix("RuntimeError: ")
    gone = [str(pid) for pid in target.pids if not os.path.exists(f"/proc/{pid}")]
    where = f"; service process(es) {', '.join(gone)} are gone (their logs: data_service/ in the run dir)" if gone else ""
    return ServiceFailed(f"data.service={target.kind} ({target.address}): the input pipeline failed on the tf.data "
                         f"service: {line[:400]}{where}")
