"""Edge benchmark (issue 15): the default job's int8 TFLite model against its float32 TFLite model.

    .venv/bin/python benchmarks/bench_edge.py [--epochs 5] [--calibration-samples 256] [extra overrides]

Trains the default job once with `export=tflite export.quantize=int8` (the exporter also converts a
float32 TFLite model of the same weights as the baseline, in the same run) and prints, from run.json's
`export.edge`, both models' bytes, validation accuracy and LiteRT latency per example, with the ratios.
Goal: int8 <= 30% of the float model's bytes and <= 1 point of validation accuracy lost.
Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE_GOAL, ACCURACY_GOAL_POINTS = 0.30, 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="trainer.epochs (default: the default job's)")
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("overrides", nargs="*", help="more overrides, e.g. model.hidden_units=[512,512]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        overrides = ["export=tflite", "export.quantize=int8",
                     f"export.calibration_samples={args.calibration_samples}", f"hydra.run.dir={tmp}/run",
                     *([f"trainer.epochs={args.epochs}"] if args.epochs else []), *args.overrides]
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "scaleflow", *overrides], cwd=tmp, capture_output=True,
                                text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")
            return 1
        run = json.loads(Path(tmp, "run", "run.json").read_text())
    edge = run["export"]["edge"]
    base = edge["float"]
    shown = " ".join(o for o in overrides if not o.startswith("hydra."))
    print(f"default job + {shown}: trained and exported in {elapsed:.0f} s; "
          f"{edge['validation_records']} validation records")
    print(f"{'model':<10} {'bytes':>10} {'val accuracy':>13} {'latency us/example':>19}")
    print(f"{'float32':<10} {base['bytes']:>10,} {base['accuracy']:>13.4f} {base['latency_us_per_example']:>19.1f}")
    print(f"{'int8':<10} {edge['bytes']:>10,} {edge['accuracy']:>13.4f} {edge['latency_us_per_example']:>19.1f}")
    print(f"keras (float32) validation accuracy: {edge['keras_accuracy']:.4f}")
    size_ok = edge["size_ratio"] <= SIZE_GOAL
    accuracy_ok = edge["accuracy_drop_points"] <= ACCURACY_GOAL_POINTS
    print(f"size ratio int8/float32: {edge['size_ratio']:.3f} (goal <= {SIZE_GOAL}) {'ok' if size_ok else 'MISSED'}")
    print(f"accuracy lost: {edge['accuracy_drop_points']:.2f} points (goal <= {ACCURACY_GOAL_POINTS}) "
          f"{'ok' if accuracy_ok else 'MISSED'}")
    print(f"latency ratio int8/float32: {edge['latency_us_per_example'] / base['latency_us_per_example']:.2f}")
    return 0 if size_ok and accuracy_ok else 1


if __name__ == "__main__":
    sys.exit(main())
