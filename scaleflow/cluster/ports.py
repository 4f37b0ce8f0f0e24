"""Free TCP ports on 127.0.0.1 for a local cluster."""

from __future__ import annotations

import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the OS reports free right now.

    All sockets are held open until every port is chosen, so the ports are distinct; they are released
    before the workers bind them (a tiny race window that only another process grabbing exactly that
    ephemeral port can hit; the worker then fails to start and the job fails cleanly).

    Example:
        >>> len(set(free_ports(3)))
        3
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
