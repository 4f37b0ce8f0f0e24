"""TensorFlow's C++ start-up lines (absl's pre-init warning, the oneDNN notice) are hidden unless the
user sets TF_CPP_MIN_LOG_LEVEL or asks for trainer.verbose=debug; real warnings and errors still show."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scaleflow import tf_logging

NOISE = "All log messages before absl::InitializeLog()"


def test_startup_info_lines_are_noise_but_warnings_and_tracebacks_are_not():
    assert tf_logging.is_startup_noise(f"WARNING: {NOISE} is called are written to STDERR\n")
    assert tf_logging.is_startup_noise("I0000 00:00:1795748776.691371   10217 port.cc:153] oneDNN custom operations")
    assert not tf_logging.is_startup_noise("W0000 00:00:1795748776.691371   10217 something.cc:1] a warning")
    assert not tf_logging.is_startup_noise("Traceback (most recent call last):")


def _import_stderr(verbose: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in (tf_logging.LEVEL, tf_logging.DEFAULTED)}
    result = subprocess.run([sys.executable, "-c", "import sys; from scaleflow import tf_logging; "
                             f"tf_logging.import_tensorflow({verbose!r})"], env={**clean, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_a_level_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.delenv(tf_logging.DEFAULTED, raising=False)
    monkeypatch.setenv(tf_logging.LEVEL, "0")
    assert tf_logging.user_chose_level()
    tf_logging.set_default_level()  # what the CLI does first
    assert os.environ[tf_logging.LEVEL] == "0"
    monkeypatch.delenv(tf_logging.LEVEL)
    tf_logging.set_default_level()
    assert os.environ[tf_logging.LEVEL] == "2" and not tf_logging.user_chose_level()


@pytest.mark.slow
def test_import_is_quiet_by_default_and_verbose_on_request():
    quiet = _import_stderr("line")
    assert NOISE not in quiet and "I0000" not in quiet
    assert NOISE in _import_stderr("debug")
