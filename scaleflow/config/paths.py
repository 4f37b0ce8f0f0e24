"""Paths named in the config: checked before TensorFlow is imported, with a clear error."""

from __future__ import annotations

import glob
import os
from typing import Any

from scaleflow.errors import ConfigError


def check_path(key: str, value: Any, kind: str) -> None:
    """kind: 'file', 'dir' or 'exists' (a file, a directory, or a glob that matches something)."""
    if value in (None, ""):
        raise ConfigError(key, value, f"the path of an existing {kind if kind != 'exists' else 'file or directory'}",
                          f"Set it on the command line, e.g. {key}=/path/to/data")
    path = os.path.expanduser(str(value))
    ok = {"file": os.path.isfile, "dir": os.path.isdir}.get(kind, lambda p: bool(glob.glob(p)))(path)
    if not ok:
        raise ConfigError(key, value, f"an existing {'file or directory' if kind == 'exists' else kind}",
                          "Nothing exists at that path")
