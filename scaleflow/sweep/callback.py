"""The Hydra callback that ends every multirun with a summary (registered in conf/config.yaml)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("scaleflow")

_last: Optional[dict] = None  # the last summary written in this process (read by the CLI's exit status)


def last_summary() -> Optional[dict]:
    """{'sweep_dir', 'jobs', 'failed', 'best', 'files'} of the last multirun in this process, or None."""
    return _last


class SweepSummary(Callback):
    """Writes summary.csv, summary.md, objective.png and TensorBoard HParams data in the sweep dir.

    Args:
        plot: write the PNG (needs matplotlib).
        hparams: write TensorBoard HParams data.

    Example (conf/config.yaml):
        hydra:
          callbacks:
            sweep_summary:
              _target_: scaleflow.sweep.callback.SweepSummary
    """

    def __init__(self, plot: bool = True, hparams: bool = True) -> None:
        self.plot, self.hparams = plot, hparams
        self.started: Optional[float] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from scaleflow import registry
        from scaleflow.sweep.objective import check

        global _last
        _last = None
        self.started = time.time()
        check(config)
        # The configured logger (e.g. mlflow) opens a parent run that every job's run hangs under.
        self.logger = registry.get("logger", config.logger.name)() if "logger" in config else None
        if self.logger is not None:
            self.logger.sweep_start(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last
        _last = write_summary(config, since=self.started, plot=self.plot, hparams=self.hparams)
        _last["promotion"] = promote_best(_last)
        if getattr(self, "logger", None) is not None:
            self.logger.sweep_end(config, _last)


def promote_best(summary: dict) -> Optional[dict]:
    """End a multirun by applying `export.promote` to its best job's export (jobs defer to this, so
    only the best of the sweep can become `stable`). A failure here is logged, never raised: the
    sweep's results stand."""
    run_dir = summary.get("best_run_dir")
    if not run_dir:
        return None
    try:
        from scaleflow.deploy.promote import promote_run

        record = promote_run(run_dir)
    except Exception as e:  # noqa: BLE001 - the summary is written; promotion is the extra step
        log.error("sweep summary: could not promote the best job (%s): %s: %s", run_dir, type(e).__name__, e)
        return {"decision": "error", "reason": f"{type(e).__name__}: {e}"}
    if record is not None:
        log.info("sweep summary: best job's export version %s is %s: %s", record.get("version"),
                 record["decision"], record["reason"])
    return record


def write_summary(config: DictConfig, since: Optional[float] = None, plot: bool = True,
                  hparams: bool = True) -> dict:
    """Everything the summary consists of, for the multirun whose config is `config`."""
    from scaleflow.sweep.summary import collect_jobs, swept_params, write_tables

    sweep_dir = str(config.hydra.sweep.dir)
    sweep = config.get("sweep") or {}
    objective, direction = sweep.get("objective", "val_loss"), sweep.get("direction", "minimize")
    rows = collect_jobs(sweep_dir, objective, direction, since=since)
    params = swept_params(rows)
    files = {}
    if plot and rows:
        try:
            from scaleflow.sweep.plot import plot_objective

            files["png"] = plot_objective(rows, params, os.path.join(sweep_dir, "objective.png"), objective,
                                          direction)
        except ImportError as e:
            log.warning("sweep summary: no plot (%s); pip install matplotlib", e)
    files.update(write_tables(rows, sweep_dir, objective, direction,
                              plot_name="objective.png" if "png" in files else None))
    if hparams and rows:
        from scaleflow.sweep.hparams import write_hparams

        files["hparams"] = write_hparams(rows, params, sweep_dir, objective)
    failed = [r.job for r in rows if r.status != "ok"]
    best = next((r for r in rows if r.best), None)
    log.info("sweep summary: %d jobs, %d failed; %s", len(rows), len(failed), files.get("md"))
    if best is not None:
        log.info("best: job %d (%s) %s=%.6g", best.job, " ".join(best.overrides), objective, best.objective)
    return {"sweep_dir": sweep_dir, "jobs": len(rows), "failed": failed,
            "best": None if best is None else best.job, "best_run_dir": None if best is None else best.run_dir,
            "files": files}
