"""mode=models: the model registry as a table (or JSON), and two runs side by side. No TensorFlow.

    python -m scaleflow mode=models                                   # every run and export under outputs/, multirun/
    python -m scaleflow mode=models registry.root=[/data/runs] registry.format=json
    python -m scaleflow mode=models registry.compare=[outputs/a,outputs/b]   # or name:version
"""

from __future__ import annotations

import json
import os

from scaleflow.errors import ConfigError
from scaleflow.model_registry import Entry, compare, find, scan

HEADLINE_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")


def _short(value, width: int = 10) -> str:
    text = "-" if value in (None, "") else str(value)
    return text.removeprefix("sha256:").removeprefix("git:")[:width]


def _metric(entry: Entry) -> str:
    for key in HEADLINE_METRICS:
        if key in entry.metrics and entry.metrics[key] is not None:
            return f"{key}={entry.metrics[key]:.4g}"
    return "-"


def _drift(entry: Entry) -> str:
    if not entry.serving:
        return "-"
    return "drift" if entry.serving.get("drift_reported") else "ok"


def table(entries: list[Entry]) -> str:
    header = ("model", "labels", "status", "metric", "strategy", "data", "config", "checksum", "code",
              "files", "served", "run")
    rows = [header]
    for e in entries:
        files = "-" if e.intact is None else ("ok" if e.intact else "CHANGED")
        rows.append((e.ref if e.identity.get("version") is not None else "-", ",".join(e.labels) or "-", e.status,
                     _metric(e), e.strategy or "-", _short(e.identity.get("data_fingerprint")),
                     _short(e.identity.get("config_hash")), _short(e.identity.get("export_checksum")),
                     _short(e.identity.get("code_version")), files, _drift(e), e.run_dir))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(f"{str(v):<{w}}" for v, w in zip(r, widths)) + "  " + str(r[-1]) for r in rows)


def comparison_text(result: dict) -> str:
    a, b = result["runs"]
    lines = [f"A: {a['run_dir']}", f"B: {b['run_dir']}", "config (keys that differ):"]
    lines += [f"  {k}: {v[0]!r} -> {v[1]!r}" for k, v in result["config"].items()] or ["  (identical)"]
    lines.append("metrics:")
    lines += [f"  {k}: {v[0]} | {v[1]}" for k, v in result["metrics"].items()]
    lines.append("throughput:")
    lines += [f"  {k}: {v[0]} | {v[1]}" for k, v in result["throughput"].items()]
    return "\n".join(lines)


def run(cfg, run_dir: str) -> dict:
    options = cfg.registry
    entries, problems = scan(list(options.root), verify=options.verify)
    for problem in problems:  # reported and skipped, never fatal
        print(f"scaleflow: skipped {problem['path']}: {problem['problem']}")
    if options.compare:
        refs = list(options.compare)
        pair = [find(entries, ref) for ref in refs]
        for ref, entry in zip(refs, pair):
            if entry is None:
                known = ", ".join(e.ref for e in entries[:8]) or "none found"
                raise ConfigError("registry.compare", ref, f"a run dir or name:version under "
                                  f"{', '.join(options.root)} (e.g. {known})")
        result = compare(*pair)
        print(json.dumps(result, indent=2, default=str) if options.format == "json" else comparison_text(result))
    else:
        result = {"models": [e.row() for e in entries], "skipped": problems}
        print(json.dumps(result, indent=2, default=str) if options.format == "json" else
              (table(entries) if entries else f"no runs under {', '.join(options.root)}"))
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "models.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    return result
