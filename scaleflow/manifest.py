"""run.json: the run manifest, rewritten atomically at every change (never half-written)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import tempfile
from typing import Any

import scaleflow
from scaleflow.identity import config_hash, model_identity


NON_FINITE_KEY = "non_finite"
MAX_PATHS = 50


def atomic_write_json(path: str, data: Any) -> None:
    """Write `data` as strict JSON: NaN and inf (which `json` would write bare, making the file
    unreadable to strict parsers) become null, and a dict gets a `non_finite` note saying where."""
    from scaleflow.security.redact import scrub

    data, found = json_safe(data)
    if found and isinstance(data, dict):
        data[NON_FINITE_KEY] = {"note": "these values were NaN or infinite and are stored as null",
                                "count": len(found), "values": dict(list(found.items())[:MAX_PATHS])}
    data = scrub(data)  # a secret this process knows (a token in a URL, an env value) is written as ***
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".run.", suffix=".json.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_safe(value: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """(a copy of `value` with every non-finite float as None, {path: "nan" | "inf" | "-inf"})."""
    found: dict[str, str] = {}

    def clean(v: Any, at: str) -> Any:
        if isinstance(v, dict):
            return {k: clean(x, f"{at}.{k}" if at else str(k)) for k, x in v.items() if k != NON_FINITE_KEY}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{at}[{i}]") for i, x in enumerate(v)]
        if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # NumPy arrays and scalars
            return clean(v.tolist(), at)
        if isinstance(v, float) and not math.isfinite(v):
            found[at] = str(v)
            return None
        return v

    return clean(value, where), found


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    import sys

    out = {"scaleflow": scaleflow.__version__, "python": platform.python_version()}
    if "tensorflow" in sys.modules:
        import keras
        import tensorflow as tf

        out.update(tensorflow=tf.__version__, keras=keras.__version__)
    return out


class Manifest:
    """The fields of run.json (README: What a run leaves): status, config, versions, strategy, data, metrics,
    throughput, export, started, ended, error."""

    def __init__(self, run_dir: str, config: dict, enabled: bool = True):
        self.path = os.path.join(run_dir, "run.json")
        self.enabled = enabled
        self.listeners: list = []
        previous = self.load(run_dir) or {}
        self.previous = previous  # an interrupted attempt's manifest, for resuming its history
        self.config_hash = config_hash(config)
        self.data: dict[str, Any] = {
            "status": "running", "config": config, "versions": versions(), "strategy": None, "data": None,
            "metrics": None, "throughput": None, "export": None, "started": now(), "ended": None,
            "error": None,
            # The model identity (see identity.py), completed by the export.
            "model": model_identity(name=None, version=None, run_dir=run_dir, config_hash=self.config_hash,
                                    data_fingerprint=None, export_checksum=None),
        }
        if previous.get("status") in ("running", "failed", "interrupted"):
            self.data["previous_attempts"] = previous.get("previous_attempts", 0) + 1
        self.write()

    @staticmethod
    def load(run_dir: str) -> dict | None:
        try:
            with open(os.path.join(run_dir, "run.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()
        self._notify("update", self.data, tuple(fields))

    def finish(self, status: str, error: str | None = None) -> None:
        self.data["versions"] = versions()
        self.update(status=status, error=error, ended=now())
        self._notify("finish", self.data)

    def follow(self, logger: Any) -> None:
        """Mirror every change into `logger` (see tracking/base.py: `update`, `finish`)."""
        self.listeners.append(logger)

    def _notify(self, hook: str, *args: Any) -> None:
        # A tracker that fails (store down, disk full) is dropped with a warning: the run and its
        # run.json go on; losing training to a logging problem would be the worse failure.
        for logger in list(self.listeners):
            try:
                getattr(logger, hook)(*args)
            except Exception as e:  # noqa: BLE001
                import logging

                logging.getLogger("scaleflow").warning("logger %s failed in %s (%s: %s); it logs nothing more "
                                                       "for this run", getattr(logger, "name", logger), hook,
                                                       type(e).__name__, e)
                self.listeners.remove(logger)

    def write(self) -> None:
        if self.enabled:
            atomic_write_json(self.path, self.data)


def mark_failed(run_dir: str, error: str, cause: bool = False) -> None:
    """run.json says `failed` with `error`, for a launcher whose job failed while its chief could not
    record it: killed (by a watchdog, or because a peer failed: still `running`), or ended by the
    launcher's teardown after a peer failed (SIGTERM: `interrupted`). `cause=True`: `error` names the
    root cause and also replaces the chief's own `failed` error, which is then only a consequence (e.g.
    "Horovod has been shut down"). A replaced error is kept as `error_seen_by_chief`."""
    path = os.path.join(run_dir, "run.json")
    manifest = Manifest.load(run_dir)
    status = manifest.get("status") if manifest else None
    if status not in ("running", "interrupted", "failed") or (status == "failed" and not cause):
        return
    if status != "running":
        manifest["error_seen_by_chief"] = manifest.get("error") or status
    manifest.update(status="failed", error=error, ended=manifest.get("ended") or now())
    atomic_write_json(path, manifest)


def mark_interrupted(run_dir: str, error: str, resume_command: str | None) -> None:
    """run.json says `interrupted`, if it still says `running`: for a launcher that forwarded a signal
    to workers whose chief was killed (it did not stop in time) before it could record it."""
    manifest = Manifest.load(run_dir)
    if manifest is None or manifest.get("status") != "running":
        return
    manifest.update(status="interrupted", error=error, resume_command=resume_command, ended=now())
    atomic_write_json(os.path.join(run_dir, "run.json"), manifest)
