"""The one model identity that run.json, the registry, the server and the audit log agree on.

A served prediction, a registry row and an audit entry all name the same six things: the export's
name and version, the run dir that produced it, the hash of the resolved config, the fingerprint of
the data it was trained on, and the checksum of the exported files (see `export/integrity.py`), plus
the code version. Everything here is pure Python: config-only modes use it without TensorFlow.

Example:

    identity = model_identity(name="mlp", version=3, run_dir="outputs/2026-11-27/10-00-00",
                              config_hash=config_hash(config), data_fingerprint="sha256:...",
                              export_checksum="sha256:...")
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from typing import Any

import scaleflow

IDENTITY_KEYS = ("name", "version", "run_dir", "config_hash", "data_fingerprint", "export_checksum",
                 "code_version")


def canonical_json(value: Any) -> bytes:
    """The bytes a hash is taken over: sorted keys, no whitespace, so equal configs hash equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def config_hash(config: dict) -> str:
    """`sha256:<hex>` of the resolved config (what run.json stores as `config`)."""
    return "sha256:" + hashlib.sha256(canonical_json(config)).hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the scaleflow checkout (with `-dirty` when it has local changes), else the
    package version: installed wheels have no repository to ask."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(scaleflow.__file__)))
    if os.path.exists(os.path.join(source, ".git")):
        try:
            commit = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=5).stdout.strip()
            dirty = subprocess.run(["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            if commit:
                return f"git:{commit}" + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return f"scaleflow=={scaleflow.__version__}"


def model_identity(*, name: str | None, version: Any, run_dir: str | None, config_hash: str | None,
                   data_fingerprint: str | None, export_checksum: str | None,
                   code_version: str | None = None) -> dict:
    """The identity as a plain dict with every key of IDENTITY_KEYS (None where unknown)."""
    return {"name": name, "version": None if version is None else int(version),
            "run_dir": os.path.abspath(run_dir) if run_dir else None, "config_hash": config_hash,
            "data_fingerprint": data_fingerprint, "export_checksum": export_checksum,
            "code_version": code_version or globals()["code_version"]()}


def short(identity: dict) -> str:
    """`name:version@checksum[:12]`: how logs and metrics labels name a model."""
    checksum = (identity.get("export_checksum") or "").removeprefix("sha256:")[:12]
    return f"{identity.get('name')}:{identity.get('version')}@{checksum or '-'}"
