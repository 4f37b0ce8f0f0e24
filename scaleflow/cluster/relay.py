"""A TCP relay from 127.0.0.1 of this network namespace into a private one (cluster/netns.py).

    python -m scaleflow.cluster.relay HOLDER_PID USER_NS PORT[,PORT...]

TensorFlow 2.21's tf.data service servers listen on every interface (`[::]:port`). scaleflow runs
them in a private network namespace (loopback only), where nothing outside can reach them, and this
relay gives the training process (which stays in the host's namespace) a way in that listens on
127.0.0.1 only: it binds 127.0.0.1:PORT for each port *before* joining the namespace (a socket stays in
the namespace it was opened in), then joins it, and forwards every connection to 127.0.0.1:PORT
inside. The service's addresses (dispatcher, workers) are therefore the same on both sides.
It prints READY once listening and exits when its stdin closes (its launcher ended or died).
"""

from __future__ import annotations

import os
import socket
import sys
import threading

READY = "scaleflow-relay: ready"
BUFFER = 1 << 20


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(BUFFER)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _serve(listener: socket.socket, port: int) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            inside = socket.create_connection(("127.0.0.1", port), timeout=10)
            inside.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, inside):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, inside), daemon=True).start()
        threading.Thread(target=_pump, args=(inside, client), daemon=True).start()


def main(argv: list[str]) -> int:
    holder, user_ns, ports = int(argv[0]), argv[1] == "1", [int(p) for p in argv[2].split(",")]
    listeners = []
    for port in ports:  # in this (the host's) namespace, on loopback only
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        listeners.append(s)
    from scaleflow.cluster.netns import join

    join(holder, user_ns)  # single-threaded still: new connections now open inside the private namespace
    for s, port in zip(listeners, ports):
        threading.Thread(target=_serve, args=(s, port), daemon=True).start()
    print(f"{READY} (ports {','.join(map(str, ports))}, pid {os.getpid()})", flush=True)
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
