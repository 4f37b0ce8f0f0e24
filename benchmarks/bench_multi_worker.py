"""Benchmark strategy=multi_worker on one machine: cluster start-up time and steps/s, 2 workers vs 1.

    python benchmarks/bench_multi_worker.py [--epochs 3] [--out bench_multi_worker.json] [key=value ...]

Start-up time is measured from launching `python -m scaleflow strategy=multi_worker
strategy.num_workers=2` to (a) every worker announcing that all peers joined and (b) the first
training step done on every worker. Throughput is run.json's steps/s (epochs after the first) of the
default job with 1 process (steps_per_execution auto, and 1 as under multi_worker) and with 2 workers.
On a 2-core machine the two workers share the cores: the throughput figure is informational.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from scaleflow.cluster.logs import FIRST_STEP, READY


def run(args: list[str], run_dir: str) -> dict:
    """Run scaleflow; return run.json plus the seconds from launch to the marker lines."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "scaleflow", *args, f"hydra.run.dir={run_dir}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=run_dir)
    marks: dict[str, list[float]] = {READY: [], FIRST_STEP: []}
    tail = []
    for line in proc.stdout:
        tail = (tail + [line])[-30:]
        for marker in marks:
            if marker in line:
                marks[marker].append(time.monotonic() - started)
    proc.wait(timeout=1800)
    total = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"scaleflow {' '.join(args)} failed ({proc.returncode}):\n{''.join(tail)}")
    with open(os.path.join(run_dir, "run.json")) as f:
        manifest = json.load(f)
    return {"manifest": manifest, "joined_s": max(marks[READY], default=None),
            "first_step_s": max(marks[FIRST_STEP], default=None), "total_s": round(total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the results here (JSON)")
    parser.add_argument("overrides", nargs="*", help="extra scaleflow overrides for every run")
    opts = parser.parse_args()
    common = [f"trainer.epochs={opts.epochs}", *opts.overrides]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-mw-") as tmp:
        cases = {
            "1_worker_spe_auto": ["strategy=default"],
            "1_worker_spe_1": ["strategy=default", "trainer.steps_per_execution=1"],
            "2_workers": ["strategy=multi_worker", "strategy.num_workers=2"],
        }
        for name, args in cases.items():
            run_dir = os.path.join(tmp, name)
            os.makedirs(run_dir)
            r = run(args + common, run_dir)
            tp = r["manifest"].get("throughput") or {}
            results[name] = {"steps_per_sec": round(tp.get("steps_per_sec") or 0, 1),
                             "examples_per_sec": round(tp.get("examples_per_sec") or 0, 1),
                             "total_s": r["total_s"]}
            if name == "2_workers":
                results[name].update(launch_to_all_joined_s=round(r["joined_s"], 2),
                                     launch_to_first_step_s=round(r["first_step_s"], 2),
                                     num_replicas=r["manifest"]["strategy"]["num_replicas"])
            print(f"{name:>18}: {json.dumps(results[name])}", flush=True)
    base = results["1_worker_spe_1"]["steps_per_sec"]
    results["speedup_2_workers_vs_1_spe_1"] = round(results["2_workers"]["steps_per_sec"] / base, 3) if base else None
    results["cpu_count"] = os.cpu_count()
    print(json.dumps(results, indent=2))
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
