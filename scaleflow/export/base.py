"""The exporter extension point, and the atomic versioned directory every exporter writes into.

An exporter writes the trained model into a temporary directory beside the target, verifies it by
reloading and comparing outputs, and only then renames it to `<export.dir>/<export.name>/<version>/`
(TensorFlow Serving's layout). A half-written or unverified model never appears at the final path,
and an existing version is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, ClassVar, Iterator

from scaleflow.config.schema import ExportConfig
from scaleflow.errors import ScaleflowError


class ExportVerificationError(ScaleflowError):
    pass


class Exporter:
    name: ClassVar[str]
    Config: ClassVar[type] = ExportConfig

    def export(self, model: Any, cfg, run_dir: str, sample: Any, is_chief: bool = True) -> dict:
        """Write and verify; return run.json's `export` {path, format, verified, max_abs_diff}."""
        raise NotImplementedError


def export_root(cfg, run_dir: str) -> str:
    directory = os.path.expanduser(cfg.export.dir)
    if not os.path.isabs(directory):
        directory = os.path.join(run_dir, directory)
    return os.path.join(directory, cfg.export.name)


def next_version(root: str, requested: Any) -> int:
    existing = [int(d) for d in os.listdir(root) if d.isdigit()] if os.path.isdir(root) else []
    if requested == "auto":
        return max(existing, default=0) + 1
    if int(requested) in existing:
        raise ScaleflowError(f"export.version={requested}: {os.path.join(root, str(requested))} already exists; "
                             "versions are never overwritten (use export.version=auto for the next one)")
    return int(requested)


@contextlib.contextmanager
def staged_version(cfg, run_dir: str, is_chief: bool = True) -> Iterator[tuple[str, str]]:
    """Yields (staging dir, final dir). On success the staging dir is renamed to the final dir;
    on failure it is removed. Non-chief workers stage in a private temp dir that is discarded."""
    root = export_root(cfg, run_dir)
    if not is_chief:
        tmp = tempfile.mkdtemp(prefix="scaleflow-export-")
        try:
            yield os.path.join(tmp, "model"), os.path.join(tmp, "model")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    os.makedirs(root, exist_ok=True)
    version = next_version(root, cfg.export.version)
    final = os.path.join(root, str(version))
    staging = tempfile.mkdtemp(prefix=f".{version}.staging-", dir=root)
    os.rmdir(staging)  # exporters create it themselves
    try:
        yield staging, final
        if os.path.exists(final):
            raise ScaleflowError(f"{final} appeared while exporting; not overwriting it")
        os.rename(staging, final)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
