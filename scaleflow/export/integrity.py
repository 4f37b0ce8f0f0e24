"""The integrity file every export carries: `<version>/scaleflow_export.json`.

It is written into the staging directory after the model is verified and before the atomic rename,
so a version directory that exists is complete and self-describing:

    {
      "format": "saved_model",
      "identity": {name, version, run_dir, config_hash, data_fingerprint, export_checksum, code_version},
      "files": {"saved_model.pb": "<sha256>", "variables/variables.index": "<sha256>", ...},
      "checksum": "sha256:<digest of the file list>",      # == identity.export_checksum
      "metadata": {"task": ..., "class_names": [...], "feature_names": [...], "feature_stats": {...}, ...}
    }

`verify_export(dir)` re-hashes every file: a missing, changed or added file, or an edited manifest,
makes the export untrusted (the registry marks it, the server refuses it, `mode=verify` says why).
No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

MANIFEST_NAME = "scaleflow_export.json"
_CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(directory: str) -> dict[str, str]:
    """{relative path (posix): sha256} of every file under `directory` except the manifest itself."""
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory).replace(os.sep, "/")
            if rel != MANIFEST_NAME:
                out[rel] = sha256_file(path)
    return out


def listing_checksum(files: dict[str, str]) -> str:
    """One checksum for the whole export: the digest of its sorted (path, sha256) listing."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]}\n".encode())
    return "sha256:" + digest.hexdigest()


def write_manifest(directory: str, fmt: str, identity: dict, metadata: dict | None = None) -> dict:
    """Hash `directory`'s files and write the integrity file; returns it (identity completed with
    the export checksum)."""
    from scaleflow.manifest import atomic_write_json

    files = file_checksums(directory)
    checksum = listing_checksum(files)
    manifest = {"format": fmt, "identity": {**identity, "export_checksum": checksum}, "files": files,
                "checksum": checksum, "metadata": metadata or {}}
    atomic_write_json(os.path.join(directory, MANIFEST_NAME), manifest)
    return manifest


def read_manifest(directory: str) -> dict:
    """The integrity file of an export version; raises OSError/ValueError when absent or unreadable."""
    with open(os.path.join(directory, MANIFEST_NAME)) as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{MANIFEST_NAME} has no file list")
    return manifest


@dataclass
class Verification:
    """What `verify_export` found. `ok` only when every file matches and nothing was added."""

    path: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.problems) if self.problems else "all files match their checksums"


def verify_export(directory: str) -> Verification:
    """Re-hash `directory` and compare it with its integrity file."""
    if not os.path.isdir(directory):
        return Verification(directory, False, [f"{directory} is not a directory"])
    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError) as e:
        return Verification(directory, False, [f"no readable {MANIFEST_NAME} ({type(e).__name__}: {e}): "
                                               "unverified or half-written export"])
    expected: dict[str, str] = manifest["files"]
    problems = []
    if listing_checksum(expected) != manifest.get("checksum"):
        problems.append(f"{MANIFEST_NAME} was edited: its file list does not match its checksum")
    actual = file_checksums(directory)
    for rel in sorted(set(expected) - set(actual)):
        problems.append(f"missing file {rel}")
    for rel in sorted(set(actual) - set(expected)):
        problems.append(f"unexpected file {rel}")
    for rel in sorted(set(expected) & set(actual)):
        if expected[rel] != actual[rel]:
            problems.append(f"changed file {rel} (sha256 {actual[rel][:12]}..., expected {expected[rel][:12]}...)")
    return Verification(directory, not problems, problems, manifest)
