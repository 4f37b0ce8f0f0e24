"""The sweep summary: one row per job from its run.json, sorted by objective, best marked.

Example:
    rows = collect_jobs("multirun/2026-01-01/12-00-00", objective="val_loss", direction="minimize")
    write_tables(rows, "multirun/2026-01-01/12-00-00", objective="val_loss", direction="minimize")
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

from scaleflow.manifest import Manifest
from scaleflow.sweep import objective as objective_lib


@dataclass
class JobRow:
    """One job of a sweep, as the summary shows it."""

    job: int
    run_dir: str
    overrides: List[str]
    status: str  # ok | failed | running (a job that never finished)
    objective: float = math.nan
    final: Dict[str, float] = field(default_factory=dict)
    examples_per_sec: Optional[float] = None
    steps_per_sec: Optional[float] = None
    duration_s: Optional[float] = None
    error: Optional[str] = None
    best: bool = False

    @property
    def params(self) -> Dict[str, str]:
        """Overrides as key -> value (the swept parameters among them)."""
        return dict(o.lstrip("+~").split("=", 1) for o in self.overrides if "=" in o)


def _job_dirs(sweep_dir: str, since: float | None) -> List[str]:
    found = []
    for root, dirs, files in os.walk(sweep_dir):
        if os.path.basename(root) == ".hydra" and "overrides.yaml" in files:
            job_dir = os.path.dirname(root)
            if since is None or os.path.getmtime(os.path.join(root, "overrides.yaml")) >= since - 1:
                found.append(job_dir)
            dirs[:] = []
        elif root.count(os.sep) - sweep_dir.count(os.sep) > 3:
            dirs[:] = []  # job dirs are a level or two below the sweep dir; don't walk exports
        else:
            dirs[:] = [d for d in dirs if d not in ("tensorboard", "backup", "export", "hparams")]
    return found


def _load_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _job_number(job_dir: str, fallback: int) -> int:
    try:
        with open(os.path.join(job_dir, ".hydra", "hydra.yaml")) as f:
            return int(yaml.safe_load(f)["hydra"]["job"]["num"])
    except Exception:  # noqa: BLE001 - an unreadable hydra.yaml: order by discovery
        return fallback


def collect_jobs(sweep_dir: str, objective: str, direction: str, since: float | None = None) -> List[JobRow]:
    """Every job under `sweep_dir` (started at or after `since`), sorted best first."""
    rows = []
    for i, job_dir in enumerate(sorted(_job_dirs(sweep_dir, since))):
        with open(os.path.join(job_dir, ".hydra", "overrides.yaml")) as f:
            overrides = [str(o) for o in (yaml.safe_load(f) or [])]
        run = Manifest.load(job_dir)
        outcome = _load_json(os.path.join(job_dir, objective_lib.OUTCOME_FILE))
        row = JobRow(job=_job_number(job_dir, i), run_dir=job_dir, overrides=overrides, status="failed")
        if run is None:
            if outcome is not None:  # a mode that writes no run.json (plan, shards, ...)
                row.status, row.error = outcome.get("status", "failed"), outcome.get("error")
            else:
                row.error = "no run.json: the job's process died before training started"
        else:
            row.status = run.get("status") or "failed"
            if row.status == "running":
                row.error = "the job ended without finishing run.json (killed?)"
            else:
                row.error = run.get("error")
            row.final = {k: float(v) for k, v in ((run.get("metrics") or {}).get("final") or {}).items()}
            throughput = run.get("throughput") or {}
            row.examples_per_sec = throughput.get("examples_per_sec")
            row.steps_per_sec = throughput.get("steps_per_sec")
            row.duration_s = run.get("duration_s")
            if row.status == "ok":
                row.objective = objective_lib.value(row.final, objective)
        rows.append(row)
    return sort_rows(rows, direction)


def sort_rows(rows: List[JobRow], direction: str) -> List[JobRow]:
    """Jobs with an objective first (best first), then finished ones without it, then failed ones."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(row: JobRow):
        has = row.status == "ok" and not math.isnan(row.objective)
        return (0 if has else 1 if row.status == "ok" else 2, sign * row.objective if has else 0.0, row.job)

    rows = sorted(rows, key=key)
    for row in rows:
        row.best = False
    if rows and rows[0].status == "ok" and not math.isnan(rows[0].objective):
        rows[0].best = True
    return rows


def swept_params(rows: List[JobRow]) -> List[str]:
    """Override keys whose value differs between jobs, in command-line order."""
    keys: List[str] = []
    for row in rows:
        keys += [k for k in row.params if k not in keys]
    return [k for k in keys if len({row.params.get(k) for row in rows}) > 1]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def table(rows: List[JobRow], objective: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the CSV and the Markdown table."""
    metrics = sorted({k for row in rows for k in row.final})
    params = swept_params(rows)  # one column each, so jobs compare at a glance
    header = ["best", "job", "status", f"objective ({objective})", *params, "overrides", *metrics,
              "examples_per_sec", "steps_per_sec", "duration_s", "run_dir", "error"]
    cells = [["*" if row.best else "", str(row.job), row.status, _fmt(row.objective),
              *[row.params.get(p, "") for p in params], " ".join(row.overrides),
              *[_fmt(row.final.get(m)) for m in metrics], _fmt(row.examples_per_sec), _fmt(row.steps_per_sec),
              _fmt(row.duration_s), row.run_dir, (row.error or "").splitlines()[0] if row.error else ""]
             for row in rows]
    return header, cells


def write_tables(rows: List[JobRow], sweep_dir: str, objective: str, direction: str,
                 plot_name: Optional[str] = None) -> Dict[str, str]:
    """Write summary.csv and summary.md in `sweep_dir`; returns their paths."""
    header, cells = table(rows, objective)
    csv_path, md_path = os.path.join(sweep_dir, "summary.csv"), os.path.join(sweep_dir, "summary.md")
    with open(csv_path + ".tmp", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(cells)
    os.replace(csv_path + ".tmp", csv_path)

    failed = [r for r in rows if r.status != "ok"]
    best = next((r for r in rows if r.best), None)
    lines = [f"# Sweep summary: {sweep_dir}", "",
             f"{len(rows)} jobs: {len(rows) - len(failed)} ok, {len(failed)} failed. "
             f"Objective: `{objective}` ({direction}), sorted best first; the best job is marked `*`.", ""]
    if best is not None:
        lines += [f"**Best: job {best.job}** ({' '.join(best.overrides) or 'no overrides'}): "
                  f"{objective} = {_fmt(best.objective)}", ""]
    if plot_name:
        lines += [f"![objective against each swept parameter]({plot_name})", ""]
    md_header = [h for h in header if h != "run_dir"]
    lines.append("| " + " | ".join(md_header) + " |")
    lines.append("| " + " | ".join("---" for _ in md_header) + " |")
    run_dir_col = header.index("run_dir")
    for row in cells:
        shown = [c for i, c in enumerate(row) if i != run_dir_col]
        lines.append("| " + " | ".join(c.replace("|", "\\|")[:160] for c in shown) + " |")
    lines += ["", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}. Each job's run.json is in its run dir; "
              "TensorBoard: `tensorboard --logdir " + sweep_dir + "` (HParams tab)."]
    with open(md_path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(md_path + ".tmp", md_path)
    return {"csv": csv_path, "md": md_path}
