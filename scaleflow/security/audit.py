"""The audit log: an append-only, hash-chained JSONL file of who did what, when.

One JSON object per line:

    {"seq": 7, "time": "2026-11-27T10:00:03+00:00", "user": "alice", "host": "gpu-3", "pid": 4242,
     "event": "export_written", ...fields..., "prev": "<hash of entry 6>", "hash": "<sha256 of this entry>"}

`hash` is the SHA-256 of the entry's canonical JSON without `hash` (so it covers `prev`): editing,
removing or inserting an entry anywhere breaks the chain at that point, and `verify` names the first
entry that no longer fits. (Removing only the *last* entries leaves a valid shorter chain; keep the log
on append-only storage or ship it elsewhere when that matters.)

Appends take an exclusive lock on the file (fcntl.flock), so any number of processes (workers,
sweeps, a server) can record at once without corrupting the chain.

Who calls it:
    train        run_start (config hash), run_end (status, data fingerprint), export_written (checksum)
    mode=verify  verify (what was checked, ok or what changed)
    serve/deploy server_start (bound address), promote, rollback, admin actions, auth_denied (auth.py)

Example:
    from scaleflow.security import audit
    audit.record("promote", model="mlp", version=3, checksum="sha256:...")   # to the configured log

The log is `security.audit_log` (default `outputs/audit.jsonl`, beside Hydra's run dirs; null turns
it off); `configure(cfg)` sets it for this process, done by every scaleflow job at start. Field values
pass through the secrets redaction: a token never lands in the log.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Optional

from scaleflow.errors import ScaleflowError

GENESIS = "0" * 64
ENV_VAR = "SCALEFLOW_AUDIT_LOG"  # set by configure(): child processes (workers) log to the same file
_path: Optional[str] = None
_configured = False


class AuditError(ScaleflowError):
    """The audit log cannot be written or read."""


def configure(cfg: Any = None, path: Optional[str] = None) -> Optional[str]:
    """Set the log this process records to: `path`, else `cfg.security.audit_log`; None/"" = off."""
    global _path, _configured
    if path is None and cfg is not None:
        security = cfg.get("security") if hasattr(cfg, "get") else None
        path = security.get("audit_log") if security is not None else None
    _path = os.path.abspath(os.path.expanduser(str(path))) if path else None
    _configured = True
    if _path:
        os.environ[ENV_VAR] = _path
    else:
        os.environ.pop(ENV_VAR, None)
    return _path


def log_path() -> Optional[str]:
    """The configured log (or the one a parent process configured), None when auditing is off."""
    if _configured:
        return _path
    return os.environ.get(ENV_VAR) or None


def entry_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _who() -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): the uid still says who
        user = f"uid:{os.getuid()}"
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid()}


def _last_line(f) -> Optional[bytes]:
    """The last non-empty line of an open binary file, reading backwards from its end."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    chunk, data = 4096, b""
    pos = end
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        lines = data.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or pos == 0:
            last = lines[-1].strip()
            return last or None
    return None


def record(event: str, *, log: Optional[str] = None, **fields: Any) -> Optional[dict]:
    """Append one entry (`event` plus `fields`, secrets redacted) to the audit log; returns it, or
    None when auditing is off. Raises AuditError when the log cannot be written or its last entry
    is unreadable (an audit trail that silently stops is worse than a failed command)."""
    import fcntl

    from scaleflow.security.redact import redact_tree

    path = os.path.abspath(os.path.expanduser(log)) if log else log_path()
    if not path:
        return None
    clean = redact_tree(fields)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")  # run.json's format (manifest.now)
    entry: dict[str, Any] = {"seq": 0, "time": now, **_who(), "event": str(event), **clean}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                last = _last_line(f)
                if last is None:
                    entry["seq"], entry["prev"] = 1, GENESIS
                else:
                    try:
                        previous = json.loads(last)
                        entry["seq"], entry["prev"] = int(previous["seq"]) + 1, str(previous["hash"])
                    except (ValueError, KeyError, TypeError):
                        raise AuditError(f"audit log {path}: its last line is not an audit entry; run "
                                         f"`python -m scaleflow mode=audit path={path}`") from None
                entry["hash"] = entry_hash(entry)
                f.seek(0, os.SEEK_END)
                f.write(json.dumps(entry, sort_keys=False, default=str).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError as e:
        raise AuditError(f"audit log {path}: cannot append ({e.strerror or e}); set security.audit_log "
                         "to a writable file, or null to turn auditing off") from None
    return entry


@dataclass
class ChainCheck:
    """What `verify` found: `ok`, the number of intact entries, and the first problem."""

    path: str
    ok: bool
    entries: int
    problem: Optional[str] = None
    line: Optional[int] = None
    events: dict = field(default_factory=dict)


def verify(path: str) -> ChainCheck:
    """Walk the chain from the first entry; stop at the first altered, missing or inserted one."""
    previous_hash, expected_seq, events = GENESIS, 1, {}
    try:
        f = open(path, "rb")
    except OSError as e:
        raise AuditError(f"audit log {path}: cannot read it ({e.strerror or e})") from None
    with f:
        n = 0
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                return ChainCheck(path, False, expected_seq - 1, f"line {n} is empty: an entry was removed", n, events)
            try:
                entry = json.loads(raw)
                seq, prev, stored = int(entry["seq"]), entry["prev"], entry["hash"]
            except (ValueError, KeyError, TypeError):
                return ChainCheck(path, False, expected_seq - 1,
                                  f"line {n} is not an audit entry (expected seq {expected_seq}): altered", n, events)
            label = f"line {n} (seq {seq}, event {entry.get('event')!r}, {entry.get('time')})"
            if entry_hash(entry) != stored:
                return ChainCheck(path, False, expected_seq - 1, f"{label} was altered: its content does not "
                                  "match its hash", n, events)
            if seq != expected_seq:
                what = (f"entries {expected_seq}..{seq - 1} are missing before it" if seq > expected_seq
                        else f"expected seq {expected_seq}: an entry was inserted or repeated")
                return ChainCheck(path, False, expected_seq - 1, f"{label}: {what}", n, events)
            if prev != previous_hash:
                return ChainCheck(path, False, expected_seq - 1, f"{label} does not follow entry {seq - 1}: "
                                  "an entry before it was altered or replaced", n, events)
            previous_hash, expected_seq = stored, seq + 1
            events[entry.get("event")] = events.get(entry.get("event"), 0) + 1
    return ChainCheck(path, True, expected_seq - 1, None, None, events)


class RunEvents:
    """run_start now; export_written and run_end from the finished run.json (`end`)."""

    def __init__(self, cfg: Any, run_dir: str, manifest: Any, enabled: bool = True):
        configure(cfg)  # also for in-process callers (tests, notebooks) that did not go through the CLI
        self.enabled = enabled and bool(log_path())
        self.run_dir = os.path.abspath(run_dir)
        if self.enabled:
            record("run_start", run_dir=self.run_dir, mode=str(cfg.get("mode", "train")),
                   config_hash=manifest.config_hash, resumed=bool(manifest.previous))

    def end(self, manifest: dict) -> None:
        if not self.enabled:
            return
        export = manifest.get("export") or {}
        model = manifest.get("model") or {}
        if export.get("path"):
            record("export_written", run_dir=self.run_dir, path=export.get("dir") or export.get("path"),
                   format=export.get("format"), name=model.get("name"), version=model.get("version"),
                   checksum=export.get("checksum"), verified=export.get("verified"))
        record("run_end", run_dir=self.run_dir, status=manifest.get("status"), error=manifest.get("error"),
               config_hash=model.get("config_hash"), data_fingerprint=(manifest.get("data") or {}).get("fingerprint"),
               export_checksum=model.get("export_checksum"))


def run_events(cfg: Any, run_dir: str, manifest: Any, enabled: bool = True) -> RunEvents:
    """Record a training run's start; call `.end(run.json)` when it finishes (ok or failed)."""
    return RunEvents(cfg, run_dir, manifest, enabled)
