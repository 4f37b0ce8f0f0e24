"""The export target, checked before training: a run must never train for hours and then find that its
model cannot be written.

`check_export_target` is part of config validation (no TensorFlow): `export.dir` must be, or be
creatable under, a writable directory, and an explicit `export.version` must not exist yet. An export
that still fails later (a full disk, a kill) loses nothing: the resume checkpoint is kept until the
export is verified and in place, and a rerun goes straight to the export (see training/train.py).

`clean_stale_staging` removes the staging directories of exports whose process died (a SIGKILL
mid-export); live exports of other runs sharing the export dir are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile

from scaleflow.errors import ConfigError

log = logging.getLogger("scaleflow")

# `.<version>.staging-<host>-<pid>-<random>` (export/base.py): who is writing it.
STAGING = re.compile(r"^\.(?P<version>\d+)\.staging-(?:(?P<host>.+)-(?P<pid>\d+)-)?[^-]+$")


def export_root(cfg, run_dir: str | None) -> str | None:
    """`<export.dir>/<export.name>` (relative dirs are inside the run dir; None if it is unknown)."""
    directory = os.path.expanduser(str(cfg.export.dir))
    if not os.path.isabs(directory):
        if run_dir is None:
            return None
        directory = os.path.join(run_dir, directory)
    return os.path.join(directory, str(cfg.export.name))


def check_export_target(cfg, run_dir: str | None) -> None:
    """Raise ConfigError if the export of this run could not be written. `run_dir` None: only an
    absolute export.dir can be checked (the rest is checked again once the run dir is known)."""
    if cfg.export.format == "none":
        return
    root = export_root(cfg, run_dir)
    if root is None:
        return
    existing = root
    while not os.path.exists(existing):  # the export creates the missing part of the path
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError("export.dir", cfg.export.dir, "a directory, or a path that can be created",
                          f"{existing} is a file, so {root} cannot be created")
    if not _writable(existing):
        raise ConfigError("export.dir", cfg.export.dir, "a writable directory",
                          f"{existing} is not writable by this user")
    version = cfg.export.version
    if version != "auto" and os.path.exists(os.path.join(root, str(version))):
        taken = sorted(int(d) for d in os.listdir(root) if d.isdigit())
        raise ConfigError("export.version", version,
                          f"a version not yet in {root} (taken: {', '.join(map(str, taken))}), or auto",
                          f"{os.path.join(root, str(version))} already exists and versions are never "
                          "overwritten; export.version=auto takes the next one")


def _writable(directory: str) -> bool:
    """os.access says yes to root everywhere, so try: a read-only mount or a special file system
    refuses even root."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".scaleflow-write-check-", dir=directory))
    except OSError:
        return False
    return True


def staging_prefix(version: int) -> str:
    """The staging dir prefix for `version`: names the host and pid that write it."""
    return f".{version}.staging-{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(root: str | None) -> list[str]:
    """Remove staging dirs under `root` left by exports on this host whose process is gone."""
    if root is None or not os.path.isdir(root):
        return []
    removed = []
    for name in sorted(os.listdir(root)):
        m = STAGING.match(name)
        if not m:
            continue
        host, pid = m.group("host"), m.group("pid")
        if host is not None and (host != socket.gethostname() or _alive(int(pid))):
            continue  # another host's, or a live export's
        path = os.path.join(root, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        log.warning("removed %s: the staging dir of an export that was interrupted", path)
    return removed
