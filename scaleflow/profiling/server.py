"""profile.port: TensorFlow's profiler server, so TensorBoard's "Capture profile" can sample a
running job (Profile tab > Capture profile > `localhost:<port>`).

Worker i of a multi-process run listens on port + i. TensorFlow's server (a gRPC server started by
`tf.profiler.experimental.server.start(port)`) takes only a port and listens on ALL interfaces
(measured: `ss -ltn` shows `*:<port>`): the README and the log say so. A port already in use is a clear error before the
server is started (TensorFlow itself would only log it and carry on). The server lives as long as
the process: TensorFlow has no call to stop it.
"""

from __future__ import annotations

import errno
import logging
import socket

from scaleflow.errors import ConfigError

log = logging.getLogger("scaleflow")

_started: set[int] = set()


def port_for(base_port: int, worker_index: int) -> int:
    return int(base_port) + int(worker_index)


def check_port_free(port: int, key: str = "profile.port") -> None:
    """ConfigError naming `key` when something already listens on `port` (on any interface)."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((address, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(key, port, "a free TCP port (worker i listens on port + i)",
                                  f"port {port} is already in use; choose another profile.port") from None
            if family == socket.AF_INET6:  # no IPv6 on this machine: the IPv4 check is the answer
                continue
            raise


def start_if_configured(cfg, distribution) -> int | None:
    """Start the profiler server when profile.port is set; returns this worker's port."""
    base = cfg.profile.get("port")
    if base is None:
        return None
    port = port_for(base, distribution.worker_index)
    if port in _started:  # one server per process: a second run in it reuses the first
        return port
    check_port_free(port)
    import tensorflow as tf

    tf.profiler.experimental.server.start(port)
    _started.add(port)
    log.warning("profile.port: TensorFlow's profiler server listens on port %d on ALL interfaces "
                "(TensorFlow takes no address to bind it to 127.0.0.1); TensorBoard > Profile > Capture "
                "profile: localhost:%d", port, port)
    if distribution.num_workers > 1:
        log.info("profile.port: worker %d's profiler server is on port %d; the workers of a local multi-process "
                 "job run in a private network namespace (scaleflow/cluster/netns.py), where only a TensorBoard "
                 "started inside it can reach them", distribution.worker_index, port)
    return port
