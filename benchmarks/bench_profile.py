"""profile=summary's cost (issue 19): the default job's throughput with it on against it off, measured
in the same run, alternating, each run in its own process (throughput from run.json: examples/s over
the epochs after the first, validation excluded). Target: >= 0.95x.

    .venv/bin/python benchmarks/bench_profile.py [--pairs 2] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def throughput(profile: str, epochs: int, run_dir: str) -> dict:
    cmd = [sys.executable, "-m", "scaleflow", f"profile={profile}", f"trainer.epochs={epochs}", "export=none",
           f"hydra.run.dir={run_dir}"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    return {"examples_per_sec": run["throughput"]["examples_per_sec"], "profile": run.get("profile")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    results = {"off": [], "summary": []}
    verdict = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for profile in ("off", "summary"):
                measured = throughput(profile, args.epochs, os.path.join(tmp, f"{profile}-{i}"))
                results[profile].append(measured["examples_per_sec"])
                if measured["profile"]:
                    verdict = measured["profile"]["verdict"]
                print(f"pair {i + 1}: profile={profile:8s} {measured['examples_per_sec']:10,.0f} ex/s", flush=True)
    off, on = statistics.median(results["off"]), statistics.median(results["summary"])
    print(f"default job, {args.epochs} epochs, median of {args.pairs}: off {off:,.0f} ex/s, summary {on:,.0f} ex/s, "
          f"ratio {on / off:.3f}x (target >= 0.95x)")
    print(f"summary's verdict: {verdict}")


if __name__ == "__main__":
    main()
