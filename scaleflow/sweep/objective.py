"""The objective of a sweep job, and the task a multirun runs for each job.

A sweeper optimises one float per job: `metrics.final[sweep.objective]` from the job's run.json
(e.g. `val_loss`), minimised or maximised according to `sweep.direction`. A job that fails returns
NaN, which Optuna records as a failed trial; Hydra's basic sweeper would stop the whole sweep on a
raised exception, so the failure is recorded in the job's run.json instead of raised.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any


from scaleflow.errors import ConfigError, did_you_mean, one_of
from scaleflow.manifest import Manifest

log = logging.getLogger("scaleflow")

DIRECTIONS = ("minimize", "maximize")


def check(cfg) -> None:
    """Raise ConfigError for a bad `sweep` node."""
    sweep = cfg.get("sweep") or {}
    direction = sweep.get("direction", "minimize")
    if direction not in DIRECTIONS:
        raise ConfigError("sweep.direction", direction, one_of(DIRECTIONS), did_you_mean(direction, DIRECTIONS))
    objective = sweep.get("objective", "val_loss")
    if not isinstance(objective, str) or not objective:
        raise ConfigError("sweep.objective", objective, "the name of a final metric, e.g. val_loss or val_accuracy")


def value(final_metrics: dict | None, objective: str) -> float:
    """`final_metrics[objective]` as a float, NaN when the job has no such metric."""
    if not final_metrics or objective not in final_metrics:
        return math.nan
    try:
        return float(final_metrics[objective])
    except (TypeError, ValueError):
        return math.nan


def run_job(cfg, run_dir: str) -> Any:
    """What each multirun job runs: train (or any mode); returns the objective for sweepers.

    Never raises for a failed job (config error, crash in training): the error goes to the log and
    run.json (status failed), NaN is returned, and the sweep goes on. The summary at the end counts
    the failures and the command exits non-zero.
    """
    from scaleflow.validation import validate
    from scaleflow.modes import run_mode
    from scaleflow.signals import TrainingInterrupted

    try:
        check(cfg)
        validate(cfg)
        result = run_mode(cfg, run_dir)
    except TrainingInterrupted as e:  # SIGTERM/SIGINT stop the sweep, not just this job (run.json has it)
        write_outcome(run_dir, "interrupted", str(e))
        print(f"scaleflow: interrupted: {e}", file=sys.stderr)
        sys.exit(e.exit_code)  # SystemExit passes through Hydra's launcher
    except Exception as e:  # noqa: BLE001 - one failed job must not stop the others
        kind = "config error" if isinstance(e, ConfigError) else "error"
        log.error("job failed: %s: %s", kind, e)
        record_failure(cfg, run_dir, e)
        write_outcome(run_dir, "failed", f"{type(e).__name__}: {e}")
        return math.nan if cfg.mode == "train" else None
    write_outcome(run_dir, "ok")
    if cfg.mode != "train":
        return result
    metrics = ((Manifest.load(run_dir) or {}).get("metrics") or {}).get("final")
    objective = value(metrics or result, cfg.sweep.objective)
    if math.isnan(objective):
        log.warning("sweep.objective=%s: the job has no such final metric (it has: %s)", cfg.sweep.objective,
                    ", ".join(sorted(metrics or result or {})) or "none")
    else:
        log.info("objective %s = %.6g (%s)", cfg.sweep.objective, objective, cfg.sweep.direction)
    return objective


OUTCOME_FILE = "sweep_job.json"


def write_outcome(run_dir: str, status: str, error: str | None = None) -> None:
    """The job's outcome as the sweep sees it (modes other than train write no run.json)."""
    from scaleflow.manifest import atomic_write_json

    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(os.path.join(run_dir, OUTCOME_FILE), {"status": status, "error": error})


def record_failure(cfg, run_dir: str, error: BaseException) -> None:
    """Make sure run.json says the job failed and why (training already does; config errors do not)."""
    if (Manifest.load(run_dir) or {}).get("status") == "failed":
        return
    os.makedirs(run_dir, exist_ok=True)
    from scaleflow.security.redact import recorded_config

    manifest = Manifest(run_dir, recorded_config(cfg))  # resolved where it resolves; secrets: ***
    manifest.finish("failed", error=f"{type(error).__name__}: {error}")
