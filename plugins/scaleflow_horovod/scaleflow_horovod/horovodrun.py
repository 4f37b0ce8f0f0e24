"""`horovodrun`, with its own servers bound to 127.0.0.1 when every rank runs on this machine.

horovodrun's rendezvous (and driver) servers bind every interface (`find_port` binds `('', port)`),
although a job on one machine only ever talks to them over 127.0.0.1. With
`SCALEFLOW_HOROVOD_LOOPBACK=1` (set by launcher.py for local jobs) they bind 127.0.0.1 instead; the
ranks already reach the rendezvous at 127.0.0.1 (horovodrun's driver address on the `lo` interface).

Usage (what launcher.py runs): python -m scaleflow_horovod.horovodrun --gloo -np 2 -H localhost:2 ...
"""

from __future__ import annotations

import os
import random

LOOPBACK_ENV = "SCALEFLOW_HOROVOD_LOOPBACK"


def loopback_find_port(server_factory):
    """horovod.runner.util.network.find_port, binding 127.0.0.1 instead of every interface."""
    min_port, max_port = 1024, 65536
    start = random.randrange(0, max_port - min_port)
    for offset in range(max_port - min_port):
        port = min_port + (start + offset) % (max_port - min_port)
        try:
            return server_factory(("127.0.0.1", port)), port
        except Exception:  # noqa: BLE001 - a port in use: try the next, as horovodrun does
            continue
    raise RuntimeError("Unable to find a port to bind to on 127.0.0.1.")


def bind_loopback() -> None:
    """Replace find_port in every horovod.runner module that imported it."""
    from horovod.runner.common.util import network as common_network
    from horovod.runner.http import http_server
    from horovod.runner.util import network

    for module in (network, http_server, common_network):
        module.find_port = loopback_find_port


def main() -> None:
    if os.environ.get(LOOPBACK_ENV) == "1":
        bind_loopback()
    from horovod.runner.launch import run_commandline

    run_commandline()


if __name__ == "__main__":
    main()
