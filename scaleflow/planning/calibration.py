"""Measures this machine for the planner: compute rate, per-step overhead, and the bandwidth and
latency of an all-reduce between two real processes.

- compute: forward + backward of two float32 dense 1024x1024 layers in TensorFlow (a training step's
  matrix work, 3 x 2 x batch x 1024^2 FLOPs per layer), the median of 30 timed runs.
- step overhead: a real Keras training step of the default MLP (as scaleflow trains it: in-memory
  data, steps_per_execution auto) minus its predicted compute time.
- all-reduce between two real processes on 127.0.0.1, two ways:
  (a) TensorFlow's CollectiveAllReduce under MultiWorkerMirroredStrategy (what strategy=multi_worker
      really uses, TF's per-collective overhead included; ~10 s of TF start-up): the profile's figures;
  (b) a ring all-reduce written here with sockets and NumPy (no TF; a second opinion, and fast
      enough for tests): the raw link.
  For R=2 a ring takes n/W + 2L for n bytes, so the latency L comes from tiny messages and the
  bandwidth W from large ones. This is the link *between processes* (`inter_host_*` in the profile:
  what multi-worker and Horovod replicas use); replicas inside one process (Mirrored) exchange
  through memory and keep the configured `bandwidth_bytes_s`/`latency_s`.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import threading
import time

import numpy as np

TIMEOUT_S = 60.0  # every socket wait and join is bounded


def _recv_exactly(sock: socket.socket, nbytes: int) -> bytearray:
    buf = bytearray(nbytes)
    view, got = memoryview(buf), 0
    while got < nbytes:
        n = sock.recv_into(view[got:], nbytes - got)
        if n == 0:
            raise ConnectionError("the other calibration process closed the connection")
        got += n
    return buf


def _exchange(sock: socket.socket, send: np.ndarray, nbytes: int) -> np.ndarray:
    """Send and receive at once (a thread sends) so large messages cannot deadlock on full buffers."""
    if send.nbytes <= 16384:  # fits the socket buffers: no thread needed (it would inflate latency)
        sock.sendall(send.tobytes())
        return np.frombuffer(_recv_exactly(sock, nbytes), dtype=send.dtype)
    sender = threading.Thread(target=sock.sendall, args=(send.tobytes(),))
    sender.start()
    received = _recv_exactly(sock, nbytes)
    sender.join(TIMEOUT_S)
    return np.frombuffer(received, dtype=send.dtype)


def ring_allreduce(sock: socket.socket, rank: int, values: np.ndarray) -> np.ndarray:
    """Ring all-reduce (sum) of `values` between 2 ranks: reduce-scatter, then all-gather."""
    chunks = np.array_split(values, 2)
    mine, theirs = chunks[rank], chunks[1 - rank]
    reduced = mine + _exchange(sock, theirs, mine.nbytes)  # reduce-scatter
    other = _exchange(sock, reduced, theirs.nbytes)  # all-gather
    return np.concatenate([reduced, other] if rank == 0 else [other, reduced])


def _timed_allreduces(sock: socket.socket, rank: int, sizes: list[int], repeats: int) -> dict:
    out = {}
    for nbytes in sizes:
        values = np.full(max(2, nbytes // 4), rank + 1, dtype=np.float32)
        result = ring_allreduce(sock, rank, values)  # warm-up, and a correctness check
        if not np.all(result == 3.0):
            raise RuntimeError("the calibration all-reduce computed a wrong sum")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ring_allreduce(sock, rank, values)
            times.append(time.perf_counter() - start)
        out[values.nbytes] = statistics.median(times)
    return out


def _peer(port: int, sizes: list[int], repeats: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _timed_allreduces(sock, 1, sizes, repeats)


def measure_allreduce(small_bytes: int = 8, large_bytes: int = 8 << 20, repeats: int = 10) -> dict:
    """Latency and bandwidth of a 2-process ring all-reduce over TCP on 127.0.0.1."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(TIMEOUT_S)
    port = server.getsockname()[1]
    sizes = [small_bytes, large_bytes]
    peer = multiprocessing.get_context("spawn").Process(target=_peer, args=(port, sizes, repeats), daemon=True)
    peer.start()
    try:
        sock, _ = server.accept()
        with sock:
            sock.settimeout(TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = _timed_allreduces(sock, 0, sizes, repeats)
    finally:
        server.close()
        peer.join(TIMEOUT_S)
        if peer.is_alive():
            peer.kill()
    (small, t_small), (large, t_large) = sorted(times.items())
    latency = t_small / 2  # n/W is negligible for a few bytes: T = 2L
    bandwidth = large / max(t_large - 2 * latency, 1e-9)  # T = 2(R-1)/R n/W + 2(R-1)L with R=2
    return {"latency_s": latency, "bandwidth_bytes_s": bandwidth, "method": "socket ring all-reduce, 2 processes",
            "samples": {"small_bytes": small, "small_s": t_small, "large_bytes": large, "large_s": t_large}}


def measure_compute(batch: int = 256, width: int = 1024, layers: int = 2, repeats: int = 30) -> dict:
    """Achieved float32 FLOP/s of a training step's matrix work in TensorFlow: forward and backward
    of `layers` dense [width, width] layers (3 x 2 x batch x width^2 FLOPs each, as the cost model
    counts a step), the median of `repeats` timed runs.

    The median of a training step, not the best of a bare matmul: on a VM whose speed drifts the best
    of ten 1024 matmuls read 205-367 GFLOP/s on one 2-core machine within an hour (the compute job's
    calibrated plan then 1.5-2.1x too fast), where this median read 198-212."""
    import tensorflow as tf

    x = tf.random.normal((batch, width))
    weights = [tf.Variable(tf.random.normal((width, width)) * 0.01) for _ in range(layers)]

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            h = x
            for w in weights:
                h = tf.nn.relu(tf.matmul(h, w))
            loss = tf.reduce_sum(h)
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, weights)])

    step(x).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x).numpy()
        times.append(time.perf_counter() - start)
    flops = 3 * 2 * batch * width * width * layers
    return {"peak_flops": flops / statistics.median(times),
            "method": f"forward + backward of {layers} dense {width}x{width} layers, batch {batch}, median of {repeats}"}


def measure_step_overhead(peak_flops: float, batch: int = 64, features: int = 32, units=(128, 128),
                          classes: int = 10, steps: int = 512) -> dict:
    """A real Keras training step of an MLP, minus its predicted compute: the fixed cost of a step."""
    import keras
    import tensorflow as tf

    from scaleflow.hardware.base import steps_per_execution

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 64, features)).astype(np.float32)
    y = rng.integers(0, classes, size=batch * 64).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat().prefetch(8)
    inputs = keras.Input((features,))
    h = inputs
    for u in units:
        h = keras.layers.Dense(u, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(h))
    spe = steps_per_execution("auto", steps, "cpu")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=spe)
    model.fit(ds, steps_per_epoch=steps // 4, epochs=1, verbose=0, shuffle=False)  # tracing and warm-up
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    step = (time.perf_counter() - start) / steps
    widths = [features, *units, classes]
    flops = sum(2 * a * b for a, b in zip(widths, widths[1:]))
    compute = 3 * flops * batch / peak_flops
    return {"step_overhead_s": max(step - compute, 0.0), "measured_step_s": step, "predicted_compute_s": compute,
            "method": f"Keras fit of MLP {widths}, batch {batch}, steps_per_execution {spe}, {steps} steps"}


# ------------------------------------------------------------- TensorFlow collectives, 2 processes
def _collective_worker(index: int, ports: list[int], sizes: list[int], repeats: int) -> None:
    """One of two MultiWorkerMirroredStrategy workers timing a replica-context all-reduce (sum) of
    `sizes` bytes; worker 0 prints {bytes: median seconds} as JSON."""
    import json
    import os

    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=TIMEOUT_S)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    out = {}
    for nbytes in sizes:
        n = max(2, nbytes // 4)

        @tf.function
        def step():
            def replica_fn():
                values = tf.ones([n]) * float(index + 1)
                total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)
                return tf.reduce_min(total)

            return strategy.run(replica_fn)

        if float(strategy.experimental_local_results(step())[0]) != 3.0:
            raise RuntimeError("the calibration collective computed a wrong sum")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            float(strategy.experimental_local_results(step())[0])
            times.append(time.perf_counter() - start)
        out[n * 4] = statistics.median(times)
    if index == 0:
        print("COLLECTIVE_TIMES " + json.dumps(out), flush=True)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def measure_tf_collective(small_bytes: int = 8, large_bytes: int = 8 << 20, repeats: int = 10,
                          timeout_s: float = 180.0) -> dict:
    """Latency and bandwidth of TensorFlow's CollectiveAllReduce between two real worker processes
    on 127.0.0.1 (what strategy=multi_worker uses): the same R=2 ring arithmetic as the socket ring."""
    import json
    import subprocess
    import sys

    ports = _free_ports(2)
    code = ("import sys, json; from scaleflow.planning.calibration import _collective_worker; "
            "_collective_worker(int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]))")
    args = [json.dumps(ports), json.dumps([small_bytes, large_bytes]), str(repeats)]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout_s))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the TensorFlow collective calibration did not finish in {timeout_s:.0f} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # a worker waiting for a peer that never came ignores SIGTERM
                p.wait(10)
    line = next((ln for ln in outputs[0][0].splitlines() if ln.startswith("COLLECTIVE_TIMES ")), None)
    if line is None or any(p.returncode for p in procs):
        last = (outputs[0][1].strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the TensorFlow collective calibration failed: {last}")
    times = {int(k): v for k, v in json.loads(line.split(" ", 1)[1]).items()}
    (small, t_small), (large, t_large) = sorted(times.items())
    latency = t_small / 2
    bandwidth = large / max(t_large - 2 * latency, 1e-9)
    return {"latency_s": latency, "bandwidth_bytes_s": bandwidth,
            "method": "TensorFlow CollectiveAllReduce (MultiWorkerMirroredStrategy), 2 processes",
            "samples": {"small_bytes": small, "small_s": t_small, "large_bytes": large, "large_s": t_large}}
