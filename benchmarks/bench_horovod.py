"""Horovod benchmark (issue 5): the default job on 2 Horovod ranks against 1, and the all-reduce cost.

    .venv/bin/python benchmarks/bench_horovod.py [--repeats 1] [--epochs 5] [--json out.json]

1. Throughput of the default job (synthetic data, MLP, global batch 64) through the CLI with
   `strategy=horovod strategy.num_workers=1` and `=2` (and `strategy=default` for reference), read from
   run.json: examples/s over the epochs after the first, validation excluded. Same global batch, so
   with 2 ranks each step is half the examples per rank plus one all-reduce.
2. Per-step all-reduce time: under `horovodrun -np 2`, the default model's gradients (one tensor per
   trainable variable, their real shapes) averaged with one `grouped_allreduce`, timed over many steps
   inside a tf.function as the training step runs it.
Needs Horovod (`make horovod`). Each run is its own process tree; on a shared 2-core machine the
numbers are noisy: use --repeats and read the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ALLREDUCE_SCRIPT = r'''
import json, sys, time
import numpy as np
import tensorflow as tf
import horovod.tensorflow as hvd
from scaleflow.cli import compose
from scaleflow import registry
from scaleflow.models.base import InputSpec

hvd.init()
cfg = compose([])
info = registry.get("dataset", cfg.data.name)().describe(cfg.data)
model = registry.get("model", cfg.model.name)().build(cfg.model, InputSpec(tuple(info.input_shape), info.num_classes))
grads = [tf.random.normal(v.shape) for v in model.trainable_variables]

@tf.function(jit_compile=False)
def step(grads):
    return hvd.grouped_allreduce(grads, op=hvd.Average)

for _ in range(20):
    step(grads)
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    out = step(grads)
    _ = out[0].numpy()
    times.append(time.perf_counter() - t)
if hvd.rank() == 0:
    print("ALLREDUCE " + json.dumps({"ranks": hvd.size(), "tensors": len(grads),
          "bytes": int(sum(np.prod(g.shape) * 4 for g in grads)),
          "median_ms": 1e3 * float(np.median(times)), "p90_ms": 1e3 * float(np.percentile(times, 90))}))
'''


def train(strategy_args: list[str], epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        result = subprocess.run([sys.executable, "-m", "scaleflow", *strategy_args, f"trainer.epochs={epochs}",
                                 "export=none", f"hydra.run.dir={run_dir}"], env=env, capture_output=True,
                                text=True, timeout=900, cwd=run_dir)
        if result.returncode != 0:
            raise SystemExit(f"{strategy_args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        with open(os.path.join(run_dir, "run.json")) as f:
            manifest = json.load(f)
    return {"examples_per_sec": manifest["throughput"]["examples_per_sec"],
            "step_time_ms": 1e3 * manifest["throughput"]["step_time_s"],
            "final_loss": manifest["metrics"]["final"]["loss"]}


def allreduce(steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "allreduce.py")
        with open(script, "w") as f:
            f.write(ALLREDUCE_SCRIPT)
        command = [sys.executable, "-c", "from horovod.runner.launch import run_commandline; run_commandline()",
                   "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, script, str(steps)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": "1"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    for line in result.stdout.splitlines():
        if "ALLREDUCE " in line:
            return json.loads(line.split("ALLREDUCE ", 1)[1])
    raise SystemExit(f"all-reduce benchmark failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--allreduce-steps", type=int, default=500)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    configs = {"default (1 process, no Horovod)": ["strategy=default"],
               "horovod 1 rank": ["strategy=horovod", "strategy.num_workers=1"],
               "horovod 2 ranks": ["strategy=horovod", "strategy.num_workers=2"]}
    results: dict = {}
    for name, overrides in configs.items():
        runs = [train(overrides, args.epochs) for _ in range(args.repeats)]
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{name:34s} {results[name]['examples_per_sec']:10,.0f} ex/s  "
              f"step {results[name]['step_time_ms']:.3f} ms  loss {results[name]['final_loss']:.4f}", flush=True)
    ratio = results["horovod 2 ranks"]["examples_per_sec"] / results["horovod 1 rank"]["examples_per_sec"]
    results["ratio_2_over_1"] = ratio
    print(f"2 ranks / 1 rank throughput: {ratio:.2f}x")
    results["allreduce"] = allreduce(args.allreduce_steps)
    a = results["allreduce"]
    print(f"grouped_allreduce of the default model's gradients ({a['tensors']} tensors, {a['bytes']:,} bytes) "
          f"on 2 ranks: median {a['median_ms']:.3f} ms/step (p90 {a['p90_ms']:.3f} ms)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
