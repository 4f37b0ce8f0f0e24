"""Sweep wall time: 4 short jobs side by side with the joblib launcher vs one by one.

    python benchmarks/bench_sweep.py                 # 4 jobs, 2 parallel, default short job
    python benchmarks/bench_sweep.py --n-jobs 2 --epochs 2 --examples 4096 --repeat 1

Runs the same sweep (`trainer.learning_rate` over 4 values) three ways, each as a user would
(`python -m scaleflow -m ...` in a subprocess, wall clock from start to exit, summary included):
  basic        Hydra's basic launcher: one job after another in one process
  joblib x1    joblib launcher, n_jobs=1: one job after another, each in a worker process
  joblib xN    joblib launcher, n_jobs=N: N jobs side by side
and prints the ratios. On 2 cores the gain comes from overlapping each job's start-up (imports,
tracing, data, export) with another job's training, not from more compute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

RATES = ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1", "3e-1", "1e-4", "3e-4"]


def run_sweep(launcher: list[str], jobs: int, epochs: int, examples: int, workdir: str,
              env: dict | None = None) -> float:
    sweep_dir = tempfile.mkdtemp(prefix="bench-sweep-", dir=workdir)
    cmd = [sys.executable, "-m", "scaleflow", "-m", *launcher,
           "trainer.learning_rate=" + ",".join(RATES[:jobs]), f"trainer.epochs={epochs}",
           f"data.num_examples={examples}", "model.hidden_units=[64]", "export=none",
           f"hydra.sweep.dir={sweep_dir}"]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(launcher)}):\n{result.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the sweep (<= 8)")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib jobs side by side")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant; the best is kept")
    parser.add_argument("--share-cores", action=argparse.BooleanOptionalAction, default=True,
                        help="scaleflow gives each of N side-by-side jobs cpus/N TensorFlow threads; "
                             "--no-share-cores pins every job to all cores instead, to see the difference")
    args = parser.parse_args()

    variants = {
        "basic (one by one, one process)": [],
        "joblib n_jobs=1 (one by one)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1"],
        f"joblib n_jobs={args.n_jobs} (side by side)": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
    }
    cpus = str(os.cpu_count() or 1)
    parallel_env = {} if args.share_cores else {"TF_NUM_INTRAOP_THREADS": cpus, "TF_NUM_INTEROP_THREADS": cpus,
                                                 "OMP_NUM_THREADS": cpus}
    results = {}
    # Rounds interleave the variants so a change in machine load hits all of them alike; best of rounds.
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as workdir:
        for round_ in range(args.repeat):
            for i, (name, launcher) in enumerate(variants.items()):
                env = parallel_env if i == 2 else {}
                wall = run_sweep(launcher, args.jobs, args.epochs, args.examples, workdir, env)
                results[name] = min(results.get(name, wall), wall)
                print(f"round {round_ + 1}: {name:40s} {wall:7.1f} s", flush=True)
    names = list(results)
    parallel = results[names[2]]
    for name, wall in results.items():
        print(f"best: {name:40s} {wall:7.1f} s")
    report = {"jobs": args.jobs, "repeat": args.repeat, "n_jobs": args.n_jobs, "parallel_env": parallel_env, "epochs": args.epochs, "examples": args.examples,
              "cpus": os.cpu_count(), "wall_s": results,
              "speedup_vs_basic": results[names[0]] / parallel, "speedup_vs_joblib_1": results[names[1]] / parallel}
    print(f"speed-up of {names[2]}: {report['speedup_vs_basic']:.2f}x vs basic, "
          f"{report['speedup_vs_joblib_1']:.2f}x vs joblib n_jobs=1 (wall time ratio)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
