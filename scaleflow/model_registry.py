"""The model registry: every run and exported model under a root, read from what runs already write.

No server and no database: a run's `run.json` (status, config, metrics, throughput, the `model`
identity) and each export's `scaleflow_export.json` (checksums) are the records; labels come from
`<export.dir>/<name>/labels.json` (`stable`, `canary`), serving reports from
`<export.dir>/<name>/serving.json`. A corrupt run.json is reported and skipped, never fatal.
No TensorFlow: `mode=models` is as fast as `--cfg job`.

Example:

    entries, problems = scan(["outputs", "multirun"])
    rows = [entry.row() for entry in entries]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from scaleflow.export.integrity import verify_export

# Directories inside a run that never hold another run's run.json: not walked (speed).
SKIP_DIRS = {".hydra", "backup", "tensorboard", "export", "plugins", "__pycache__", ".git", "variables",
             "assets", "assets.extra"}


@dataclass
class Entry:
    """One run (and its export, if it has one)."""

    run_dir: str
    status: str
    identity: dict
    metrics: dict
    strategy: str | None
    throughput: dict
    config: dict
    export: dict
    started: str | None
    labels: list[str] = field(default_factory=list)
    intact: bool | None = None  # export files match their checksums (None: no export)
    integrity: str | None = None
    serving: dict | None = None

    @property
    def ref(self) -> str:
        name, version = self.identity.get("name"), self.identity.get("version")
        return f"{name}:{version}" if name and version is not None else os.path.basename(self.run_dir)

    def row(self) -> dict:
        """The flat record `mode=models` prints and writes as JSON."""
        return {"model": self.identity.get("name"), "version": self.identity.get("version"),
                "labels": self.labels, "run_dir": self.run_dir, "status": self.status,
                "metrics": self.metrics, "strategy": self.strategy,
                "data_fingerprint": self.identity.get("data_fingerprint"),
                "config_hash": self.identity.get("config_hash"),
                "export_checksum": self.identity.get("export_checksum"),
                "export_path": self.export.get("path"), "code_version": self.identity.get("code_version"),
                "intact": self.intact, "integrity": self.integrity, "started": self.started,
                "serving": self.serving}


def find_run_files(roots: Iterable[str]) -> list[str]:
    """Every run.json below `roots` (missing roots are skipped), in a stable order."""
    found = []
    for root in roots:
        root = os.path.expanduser(root)
        if os.path.isfile(root) and os.path.basename(root) == "run.json":
            found.append(os.path.abspath(root))
            continue
        for directory, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(".staging"))
            if "run.json" in files:
                found.append(os.path.abspath(os.path.join(directory, "run.json")))
    return sorted(set(found))


def _labels(export_dir: str | None) -> dict:
    """{version: [label, ...]} from the model's labels.json (see deploy/labels.py)."""
    from scaleflow.deploy.labels import LabelsError, read_labels

    if not export_dir:
        return {}
    try:
        labels = read_labels(os.path.dirname(export_dir))
    except LabelsError:
        return {}
    out: dict[int, list[str]] = {}
    for label, version in labels.items():
        out.setdefault(version, []).append(label)
    return out


def _serving(export_dir: str | None, version: Any) -> dict | None:
    """What a server reported for this version (requests, drift) in `<name>/serving.json`."""
    if not export_dir:
        return None
    try:
        with open(os.path.join(os.path.dirname(export_dir), "serving.json")) as f:
            return json.load(f).get("versions", {}).get(str(version))
    except (OSError, ValueError, AttributeError):
        return None


def load_entry(path: str, verify: bool = True) -> Entry:
    """An Entry from a run.json path; raises ValueError when the file is not a readable run.json."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(data, dict) or "status" not in data:
        raise ValueError("not a scaleflow run.json (no status)")
    export = data.get("export") or {}
    identity = data.get("model") or export.get("identity") or {}
    export_dir = export.get("dir") or (export.get("path") if export.get("format") == "saved_model" else None)
    entry = Entry(run_dir=os.path.dirname(path), status=data.get("status", "?"), identity=identity,
                  metrics=(data.get("metrics") or {}).get("final") or {},
                  strategy=(data.get("strategy") or {}).get("name"), throughput=data.get("throughput") or {},
                  config=data.get("config") or {}, export=export, started=data.get("started"))
    if export_dir:
        entry.labels = sorted(_labels(export_dir).get(identity.get("version"), []))
        entry.serving = _serving(export_dir, identity.get("version"))
        if verify:
            result = verify_export(export_dir)
            entry.intact, entry.integrity = result.ok, result.reason
    return entry


def scan(roots: Iterable[str], verify: bool = True) -> tuple[list[Entry], list[dict]]:
    """(entries, problems): every readable run below `roots`, and each unreadable run.json with why."""
    entries, problems = [], []
    for path in find_run_files(roots):
        try:
            entries.append(load_entry(path, verify))
        except ValueError as e:
            problems.append({"path": path, "problem": str(e)})
    return entries, problems


def flatten(value: Any, prefix: str = "") -> dict:
    """{"a.b": 1} from {"a": {"b": 1}}: configs are compared key by key."""
    if isinstance(value, dict):
        out: dict = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def find(entries: list[Entry], ref: str) -> Entry | None:
    """A run by its directory (or a unique suffix of it) or by `name:version`."""
    path = os.path.abspath(os.path.expanduser(ref))
    for entry in entries:
        if entry.run_dir == path or entry.ref == ref:
            return entry
    matches = [e for e in entries if e.run_dir.endswith(os.sep + ref.strip(os.sep))]
    return matches[0] if len(matches) == 1 else None


def compare(a: Entry, b: Entry) -> dict:
    """Two runs side by side: only the config keys that differ, metrics and throughput of both."""
    left, right = flatten(a.config), flatten(b.config)
    config = {key: [left.get(key), right.get(key)] for key in sorted(set(left) | set(right))
              if left.get(key) != right.get(key)}
    metrics = {key: [a.metrics.get(key), b.metrics.get(key)] for key in sorted(set(a.metrics) | set(b.metrics))}
    throughput = {key: [a.throughput.get(key), b.throughput.get(key)]
                  for key in ("examples_per_sec", "steps_per_sec") if key in a.throughput or key in b.throughput}
    return {"runs": [a.row(), b.row()], "config": config, "metrics": metrics, "throughput": throughput}
