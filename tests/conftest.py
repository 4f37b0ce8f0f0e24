"""Shared test helpers.

Training tests run in this pytest process (one TensorFlow import for the whole session) through
`train(...)`; CLI behaviour is tested in subprocesses through `cli(...)`. The session's TensorFlow is
configured with 2 logical CPU devices up front so Mirrored tests can run beside single-device ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Small, fast defaults for training tests (a few seconds each).
QUICK = ["data.num_examples=1024", "trainer.epochs=2", "model.hidden_units=[32]"]


def compose(*overrides: str):
    from scaleflow.cli import compose as _compose

    return _compose(list(overrides))


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, initialised once per session with 2 logical CPU devices (as the shared suites do)."""
    from scaleflow.testing import tensorflow_session

    return tensorflow_session()


@pytest.fixture
def train(tf, tmp_path):
    """train(*overrides, run_dir=None) -> run.json of a real in-process training run."""

    def _train(*overrides: str, run_dir: Path | None = None) -> dict:
        from scaleflow.training.train import run

        run_dir = Path(run_dir or tmp_path / "run")
        cfg = compose(*overrides)
        run(cfg, str(run_dir))
        return json.loads((run_dir / "run.json").read_text())

    return _train


def cli(*args: str, cwd: Path | str | None = None, timeout: float = 300, env: dict | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m scaleflow ARGS` in a subprocess, as a user would."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "scaleflow", *args], cwd=cwd, env=full_env, timeout=timeout,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"scaleflow {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
