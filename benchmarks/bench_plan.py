"""Planner benchmark (issue 6): predicted against measured step time of the default job.

    .venv/bin/python benchmarks/bench_plan.py [--repeats 1] [--profile PATH] [--calibrate]

Runs the default job (`python -m scaleflow`, export off) under strategy=default,
strategy=mirrored hardware.logical_devices=2 and, when registered, strategy=multi_worker
strategy.num_workers=2 (2 real processes on 127.0.0.1), each in its own process, and reports what
run.json records: the planner's predicted step time, the measured one (Throughput: epochs after the
first, validation excluded) and measured/predicted. The aim is a ratio within 1.5x either way.
Figures come from conf/hardware/cpu.yaml unless --profile (or --calibrate, which runs mode=calibrate
first) gives a hardware profile measured on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
JOBS = {
    "default": ["strategy=default"],
    "mirrored": ["strategy=mirrored", "hardware.logical_devices=2"],
    "multi_worker": ["strategy=multi_worker", "strategy.num_workers=2"],
}


def run_job(name: str, overrides: list[str], root: Path, profile: str | None) -> dict:
    run_dir = root / name
    extra = [f"plan.profile={profile}"] if profile else []
    result = subprocess.run([sys.executable, "-m", "scaleflow", *overrides, "export=none", *extra,
                             f"hydra.run.dir={run_dir}"], cwd=root, env=ENV, capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads((run_dir / "run.json").read_text())["step_time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", help="hardware profile YAML from mode=calibrate")
    parser.add_argument("--calibrate", action="store_true", help="run mode=calibrate first and use its profile")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from scaleflow import registry

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        profile = args.profile
        if args.calibrate:
            subprocess.run([sys.executable, "-m", "scaleflow", "mode=calibrate", f"hydra.run.dir={root / 'cal'}"],
                           cwd=root, env=ENV, check=True, capture_output=True, timeout=600)
            profile = str(root / "cal" / "hardware_profile.yaml")
            print((root / "cal" / "hardware_profile.yaml").read_text())
        print(f"figures: {'profile ' + profile if profile else 'conf/hardware/cpu.yaml defaults'}")
        print(f"{'strategy':<14}{'predicted ms':>14}{'measured ms':>14}{'measured/predicted':>20}")
        for name, overrides in JOBS.items():
            if name not in registry.names("strategy"):
                print(f"{name:<14}  (not registered)")
                continue
            runs = [run_job(name, overrides, root, profile) for _ in range(args.repeats)]
            good = [r for r in runs if "error" not in r and r.get("ratio")]
            if not good:
                print(f"{name:<14}  failed: {runs[0].get('error')}")
                continue
            predicted = statistics.median(r["predicted_step_time_s"] for r in good) * 1e3
            measured = statistics.median(r["measured_step_time_s"] for r in good) * 1e3
            ratio = statistics.median(r["ratio"] for r in good)
            flag = "" if 1 / 1.5 <= ratio <= 1.5 else "   (outside 1.5x)"
            print(f"{name:<14}{predicted:>14.3f}{measured:>14.3f}{ratio:>20.2f}{flag}")


if __name__ == "__main__":
    main()
