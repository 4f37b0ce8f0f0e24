"""mode=serve throughput: N concurrent single-instance clients for T seconds, batching off vs on,
1 and 2 workers, against calling the SavedModel in-process with the same batch sizes (the limit).

    python benchmarks/bench_serve.py                         # trains a small model first (~20 s)
    python benchmarks/bench_serve.py --seconds 3 --workers 1 # the short run
    python benchmarks/bench_serve.py --model-dir outputs/<run>/export/mlp --clients 32 --seconds 5

Each server is a real `python -m scaleflow mode=serve` process on 127.0.0.1; the load generator is
a bounded asyncio client (keep-alive HTTP/1.1 connections, one request in flight per client, every
request with a timeout, the whole run capped at T + 30 s) posting TF Serving row bodies
(`{"instances": [[...]]}`) to `/v1/models/<name>:predict`. Goal: batching on >= 5x batching off
at 32 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(workdir: str) -> str:
    """A classifier exported as `<workdir>/models/bench/1`: 64 features, two layers of 512 (one
    epoch on 2048 records; the weights do not matter here, the cost of a call does)."""
    subprocess.run([sys.executable, "-m", "scaleflow", "data.num_examples=2048", "trainer.epochs=1",
                    "data.num_features=64", "model.hidden_units=[512,512]", f"export.dir={workdir}/models",
                    "export.name=bench",
                    f"hydra.run.dir={workdir}/run", "trainer.verbose=quiet"], check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return os.path.join(workdir, "models", "bench")


def start_server(model_dir: str, workdir: str, batching: bool, workers: int, timeout: float = 180.0):
    port = free_port()
    log = open(os.path.join(workdir, f"server-{port}.log"), "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "scaleflow", "mode=serve", f"serve.model_dir={model_dir}", f"serve.port={port}",
         f"serve.max_batch_size={64 if batching else 1}", f"serve.workers={workers}",
         f"hydra.run.dir={workdir}/serve-{port}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.monotonic() + timeout
    ready_in_a_row = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                ready_in_a_row = ready_in_a_row + 1 if r.status == 200 else 0
        except OSError:
            ready_in_a_row = 0
        if ready_in_a_row >= 3:
            return process, port
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"server did not become ready; see {log.name}")


def stop_server(process) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def client(port: int, path: str, body: bytes | None, until: float, latencies: list, errors: list) -> None:
    if body is None:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    else:
        request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await asyncio.wait_for(reader.readexactly(length), 10)
            if head.startswith(b"HTTP/1.1 200"):
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(head.split(b"\r\n", 1)[0])
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        errors.append(type(e).__name__)
    finally:
        writer.close()


async def load(port: int, name: str | None, row: list, clients: int, seconds: float) -> dict:
    """Predict requests of one instance each; with name None, GET /v2/health/live (no model: the
    HTTP stack's own ceiling on this machine)."""
    body = json.dumps({"instances": [row]}).encode() if name else None
    path = f"/v1/models/{name}:predict" if name else "/v2/health/live"
    latencies: list = []
    errors: list = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.wait_for(asyncio.gather(*(client(port, path, body, until, latencies, errors)
                                            for _ in range(clients))), seconds + 30)
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "ok": len(latencies), "errors": len(errors)}


def in_process(model_dir: str, row: list, seconds: float) -> dict:
    """The SavedModel called directly, batch 1 and batch 64: rows/s."""
    from scaleflow.export.saved_model import serving_function

    version = max(int(d) for d in os.listdir(model_dir) if d.isdigit())
    predict = serving_function(os.path.join(model_dir, str(version)))
    out = {}
    for batch in (1, 64):
        x = np.asarray([row] * batch, dtype=np.float32)
        predict(x)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            predict(x)
            calls += 1
        elapsed = time.perf_counter() - started
        out[batch] = {"rows_per_s": calls * batch / elapsed, "ms_per_call": elapsed / calls * 1000}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="an export's model dir (default: train a small one)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-serve-")
    model_dir = args.model_dir or train(workdir)
    version = max(int(d) for d in os.listdir(model_dir) if d.isdigit())
    meta = json.load(open(os.path.join(model_dir, str(version), "scaleflow_export.json")))["metadata"]
    row = np.random.default_rng(0).normal(size=meta["input_shape"]).round(4).tolist()
    name = os.path.basename(os.path.normpath(model_dir))

    print(f"mode=serve, {args.clients} concurrent single-instance clients for {args.seconds:g} s "
          f"(model {name}:{version}, {os.cpu_count()} cores, client and server on one machine)")
    print(f"{'workers':>7}  {'batching':>8}  {'req/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'errors':>6}", flush=True)
    results = {}
    for workers in args.workers:
        for batching in (False, True):
            process, port = start_server(model_dir, workdir, batching, workers)
            try:
                r = results[(workers, batching)] = asyncio.run(load(port, name, row, args.clients, args.seconds))
                ceiling = asyncio.run(load(port, None, row, args.clients, args.seconds)) if batching else None
            finally:
                stop_server(process)
            print(f"{workers:>7}  {'on' if batching else 'off':>8}  {r['rps']:>8.0f}  {r['p50']:>7.1f}  "
                  f"{r['p99']:>7.1f}  {r['errors']:>6}", flush=True)
            if ceiling:
                print(f"{workers:>7}  {'no model':>8}  {ceiling['rps']:>8.0f}  {ceiling['p50']:>7.1f}  "
                      f"{ceiling['p99']:>7.1f}  {ceiling['errors']:>6}   GET /v2/health/live: the HTTP stack alone",
                      flush=True)
    limit = in_process(model_dir, row, min(args.seconds, 2.0))
    for workers in args.workers:
        off, on = results[(workers, False)], results[(workers, True)]
        print(f"batching on / off, {workers} worker(s): {on['rps'] / max(off['rps'], 1e-9):.1f}x  (goal >= 5x)")
    print("in-process SavedModel (the limit): "
          + ", ".join(f"batch {b}: {v['rows_per_s']:.0f} rows/s ({v['ms_per_call']:.2f} ms/call)"
                      for b, v in limit.items()))


if __name__ == "__main__":
    main()
