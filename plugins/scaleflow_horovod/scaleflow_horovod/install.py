"""Is a usable Horovod installed, and if not, the command that installs one.

Horovod's compiled ops are tied to the exact TensorFlow they were built against; its build records
that version in `horovod/metadata.json`. This check reads it without importing TensorFlow or Horovod,
so a missing or mismatched Horovod is reported before a job starts (and config-only commands stay fast).
"""

from __future__ import annotations

import importlib.util
import json
import os
from importlib import metadata

from scaleflow.errors import ScaleflowError

HOROVOD_VERSION = "0.28.1"
TF_DISTRIBUTIONS = ("tensorflow-cpu", "tensorflow", "tensorflow-gpu")
BUILD_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build_horovod.sh")


def install_command() -> str:
    """What a user runs to build and install Horovod for the installed TensorFlow."""
    if os.path.exists(BUILD_SCRIPT):
        return f"bash {BUILD_SCRIPT}   (or `make horovod` in a scaleflow checkout)"
    return "`make horovod` in a scaleflow checkout (plugins/scaleflow_horovod/build_horovod.sh)"


def tensorflow_version() -> str | None:
    for dist in TF_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def horovod_built_for() -> str | None:
    """The TensorFlow version the installed Horovod was compiled against; None if no Horovod."""
    try:
        spec = importlib.util.find_spec("horovod")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        try:
            with open(os.path.join(location, "metadata.json")) as f:
                return str(json.load(f).get("tensorflow") or "unknown")
        except (OSError, ValueError):
            continue
    return "unknown"


def check() -> None:
    """Raise ScaleflowError, with the install command, unless Horovod matches the installed TensorFlow."""
    tf_version = tensorflow_version()
    built_for = horovod_built_for()
    if built_for is None:
        raise ScaleflowError(
            f"strategy=horovod needs Horovod {HOROVOD_VERSION} built with TensorFlow {tf_version} and Gloo, "
            f"and Horovod is not installed. Install it with: {install_command()}")
    if built_for != tf_version:
        raise ScaleflowError(
            f"strategy=horovod: the installed Horovod was built against TensorFlow {built_for}, but TensorFlow "
            f"{tf_version} is installed (Horovod's ops only load into the TensorFlow they were compiled for). "
            f"Rebuild it with: {install_command()}")


def import_horovod():
    """`horovod.tensorflow`, or ScaleflowError naming the install command."""
    check()
    try:
        import horovod.tensorflow as hvd
    except Exception as e:  # noqa: BLE001 - a broken build fails in many ways (ImportError, NotFoundError)
        raise ScaleflowError(f"strategy=horovod: Horovod is installed but does not load ({type(e).__name__}: "
                             f"{e}). Rebuild it with: {install_command()}") from None
    return hvd
