"""The body of one tf.data service process that `scaleflow.cluster.data_service.LocalService` starts.

    python -m scaleflow.cluster.data_service_server dispatcher --port P --workers 127.0.0.1:A,127.0.0.1:B
    python -m scaleflow.cluster.data_service_server worker --port A --dispatcher 127.0.0.1:P

The dispatcher gets the fixed worker list that static sharding needs; each worker registers under
the exact address in that list. The process prints `READY` once its server runs and lives until
its stdin closes (its launcher ended or died: no orphan survives it), or until SIGTERM/SIGKILL.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

READY = "scaleflow-data-service: ready"


def _exit_when_stdin_closes() -> None:
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except OSError:
        pass
    os._exit(0)  # the launcher is gone (or closed us): end now, whatever TensorFlow is doing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaleflow.cluster.data_service_server")
    parser.add_argument("role", choices=("dispatcher", "worker"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", default="", help="dispatcher: the fixed worker list (comma-separated)")
    parser.add_argument("--dispatcher", default="", help="worker: the dispatcher's host:port")
    args = parser.parse_args(argv)
    threading.Thread(target=_exit_when_stdin_closes, name="stdin-watch", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to save: end at once
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    service = tf.data.experimental.service
    if args.role == "dispatcher":
        server = service.DispatchServer(service.DispatcherConfig(
            port=args.port, protocol="grpc", worker_addresses=[w for w in args.workers.split(",") if w],
            fault_tolerant_mode=False))
    else:
        server = service.WorkerServer(service.WorkerConfig(
            dispatcher_address=args.dispatcher, worker_address=f"127.0.0.1:{args.port}", port=args.port,
            protocol="grpc"))
    print(f"{READY} ({args.role} on port {args.port}, pid {os.getpid()})", flush=True)
    server.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
