"""What every suite needs: a composed config, one TensorFlow session, a real run, a TF-free probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LOGICAL_CPUS = 2  # the session's CPU is split in two, so Mirrored-like strategies run beside the others


def compose(*overrides: str) -> Any:
    """The validated job config for `overrides`, as `python -m scaleflow` would build it."""
    from scaleflow.cli import compose as _compose

    return _compose(list(overrides))


def tensorflow_session() -> Any:
    """TensorFlow, initialised once per process with LOGICAL_CPUS logical CPU devices."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)
    except RuntimeError:
        pass  # already initialised: keep what the first caller set
    return tf


def train(run_dir: Path | str, *overrides: str) -> dict:
    """A real in-process training run of `overrides` in `run_dir`; returns its run.json."""
    from scaleflow.training.train import run

    tensorflow_session()
    run(compose(*overrides), str(run_dir))
    return json.loads((Path(run_dir) / "run.json").read_text())


def run_without_tensorflow(code: str, timeout: float = 120) -> str:
    """Run Python `code` in a fresh process and return its stdout; fails if it imported TensorFlow.
    `code` runs with `from scaleflow.testing import compose` available."""
    probe = ("import sys\nfrom scaleflow.testing.session import compose\n" + code +
             "\nassert 'tensorflow' not in sys.modules, 'imported TensorFlow'\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise AssertionError(f"the probe failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout
