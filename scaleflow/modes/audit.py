"""mode=audit: is the audit log intact? (no TensorFlow)

    python -m scaleflow mode=audit                          # security.audit_log (outputs/audit.jsonl)
    python -m scaleflow mode=audit path=/var/log/scaleflow/audit.jsonl

Walks the hash chain from the first entry and names the first altered, missing or inserted entry
(line, seq, event, time); exit status 1 when the chain is broken, 2 when there is no log to check.
"""

from __future__ import annotations

import os

from scaleflow.errors import ConfigError, ScaleflowError
from scaleflow.security import audit


def run(cfg, run_dir: str) -> dict:
    path = cfg.get("path") or cfg.security.audit_log
    if not path:
        raise ConfigError("path", path, "the audit log to check", "security.audit_log is off; give path=...")
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise ConfigError("path" if cfg.get("path") else "security.audit_log", path, "an existing audit log (JSONL)",
                          "Nothing exists at that path")
    check = audit.verify(path)
    if not check.ok:
        raise ScaleflowError(f"audit log {path}: chain broken after {check.entries} intact entries: {check.problem}")
    summary = ", ".join(f"{event} {n}" for event, n in sorted(check.events.items()))
    print(f"ok  {path}: {check.entries} entries, chain intact ({summary or 'empty'})")
    return {"entries": check.entries}
