"""Model management and explainability, timed on this machine.

1. Registry: one real run (default model, small data) copied into 100 run dirs, each with its own
   sealed export; `scan` (with checksum verification of every export) and `mode=models` from the
   command line, against `--cfg job` measured in the same run (the cost of starting the CLI at all).
2. Explain on the default job (synthetic data, MLP [128,128], 5 epochs): `mode=explain` on 512
   validation records (integrated gradients, 32 steps; permutation importance, 3 repeats), against
   `mode=evaluate` on the same model and split.

    .venv/bin/python benchmarks/bench_registry_explain.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def cli_seconds(*args: str, cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scaleflow", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    from scaleflow.cli import compose
    from scaleflow.model_registry import scan
    from scaleflow.training.train import run

    work = tempfile.mkdtemp(prefix="bench-registry-")
    try:
        source = os.path.join(work, "source")
        run(compose(["trainer.verbose=quiet"]), source)  # the default job, as `make run` trains it
        # --- registry: 100 copies, each export pointing at its own copy
        outputs = os.path.join(work, "outputs")
        for i in range(100):
            target = os.path.join(outputs, f"run-{i:03d}")
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("tensorboard", "backup"))
            manifest = json.load(open(os.path.join(target, "run.json")))
            manifest["export"]["dir"] = manifest["export"]["dir"].replace(source, target)
            json.dump(manifest, open(os.path.join(target, "run.json"), "w"))
        start = time.perf_counter()
        entries, problems = scan([outputs])
        scan_s = time.perf_counter() - start
        assert len(entries) == 100 and not problems and all(e.intact for e in entries)
        models_s = cli_seconds("mode=models", f"registry.root=[{outputs}]", f"hydra.run.dir={work}/m", cwd=work)
        cfg_s = cli_seconds("--cfg", "job", cwd=work)
        print(f"registry: scan of 100 runs with checksum verification {scan_s:.3f} s; "
              f"`mode=models` end to end {models_s:.2f} s vs `--cfg job` {cfg_s:.2f} s ({models_s / cfg_s:.2f}x)")
        # --- explain vs evaluate on the default job
        from scaleflow.modes import evaluate, explain

        start = time.perf_counter()
        evaluate.run(compose(["mode=evaluate", f"run={source}", "evaluate.split=validation", "evaluate.plot=false"]),
                     os.path.join(work, "eval"))
        evaluate_s = time.perf_counter() - start
        start = time.perf_counter()
        explain.run(compose(["mode=explain", f"run={source}"]), os.path.join(work, "explain"))
        explain_s = time.perf_counter() - start
        print(f"explain (default job, 512 validation records): {explain_s:.2f} s (goal < 30 s); "
              f"evaluate on the whole validation split {evaluate_s:.2f} s ({explain_s / evaluate_s:.1f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
