"""The optimizer's update workspace the planner assumes (planning/cost_model.py OPTIMIZER_WORKSPACE).

    .venv/bin/python benchmarks/bench_optimizer_memory.py [--rows 4096] [--cols 16384]

For each Keras backend (TensorFlow, JAX), in its own process: one Dense kernel of rows x cols float32
values, Adam, a few training steps on a batch of 8; the peak RSS (VmHWM) above the start is reported
in units of the kernel's size. Weights + gradient + 2 Adam slots account for 4 units; what is above
that is the update's workspace (and the step's other temporaries), which mode=plan adds to the memory
per device as OPTIMIZER_WORKSPACE[backend] x the largest variable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def worker(rows: int, cols: int) -> dict:
    import numpy as np
    import keras

    def peak() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

    x, y = np.ones((8, rows), np.float32), np.ones((8, cols), np.float32)
    keras.ops.convert_to_tensor(x)  # the backend's runtime is up before the baseline
    start = peak()
    inputs = keras.Input((rows,))
    model = keras.Model(inputs, keras.layers.Dense(cols, use_bias=False)(inputs))
    model.compile(keras.optimizers.Adam(), "mse")
    for _ in range(4):
        model.train_on_batch(x, y)
    unit = rows * cols * 4
    return {"backend": keras.backend.backend(), "peak_units": round((peak() - start) / unit, 2),
            "workspace_units": round((peak() - start) / unit - 4, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=16384)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.rows, args.cols)), flush=True)
        return
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from scaleflow.planning.cost_model import OPTIMIZER_WORKSPACE

    print(f"one {args.rows}x{args.cols} float32 kernel ({args.rows * args.cols * 4 / 1e6:.0f} MB), Adam; "
          "peak RSS above the start, in units of the kernel (4 = weights + gradient + 2 slots)")
    print(f"{'backend':<12}{'peak':>8}{'workspace':>11}{'planner':>9}")
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        result = subprocess.run([sys.executable, __file__, "--worker", "--rows", str(args.rows), "--cols",
                                 str(args.cols)], env=env, capture_output=True, text=True, timeout=300)
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{backend:<12} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(line.split(" ", 1)[1])
        print(f"{backend:<12}{r['peak_units']:>8.2f}{r['workspace_units']:>11.2f}{OPTIMIZER_WORKSPACE[backend]:>9.2f}")


if __name__ == "__main__":
    main()
