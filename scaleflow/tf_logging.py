"""TensorFlow's C++ start-up logging: hidden below warnings unless the user asks for it.

`import tensorflow` prints, twice (two native libraries initialise), absl's "All log messages before
absl::InitializeLog() is called are written to STDERR" and info lines such as the oneDNN notice. They
are written to file descriptor 2 before TF_CPP_MIN_LOG_LEVEL applies, so setting the variable is not
enough: the import runs with descriptor 2 captured, and every line that is not such an info line
(warnings, errors, a Python traceback) is written back to stderr.

The user wins: with TF_CPP_MIN_LOG_LEVEL set in the environment, or `trainer.verbose=debug` (level 0),
nothing is filtered. TensorFlow's Python logger (e.g. "Assets written to: ..." on every export) is kept
at warnings too, except under `trainer.verbose=debug`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# Set by the CLI when it chose LEVEL itself, so that worker processes know the user did not.
DEFAULTED = "SCALEFLOW_TF_LOG_LEVEL_DEFAULTED"
QUIET_LEVEL = "2"  # warnings and errors stay hidden at the C++ level too; Python warnings are unaffected

_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_INFO_LINE = re.compile(r"^I\d{4} \d\d:\d\d:\d\d")  # absl's info prefix: I<mmdd> <hh:mm:ss>...
_CONTINUATION = "To enable the following instructions:"  # second line of cpu_feature_guard's info


def set_default_level() -> None:
    """Called by the CLI before anything else: quiet unless the user chose a level."""
    if LEVEL not in os.environ:
        os.environ[LEVEL] = QUIET_LEVEL
        os.environ[DEFAULTED] = "1"


def user_chose_level() -> bool:
    return LEVEL in os.environ and os.environ.get(DEFAULTED) != "1"


def is_startup_noise(line: str) -> bool:
    return line.startswith(_ABSL_PREAMBLE) or bool(_INFO_LINE.match(line)) or line.startswith(_CONTINUATION)


# Modes that load a model in the process that runs them (train imports in training/train.py, after a
# multi-process launcher has decided whether this process trains).
MODEL_MODES = ("evaluate", "predict", "explain", "serve")


def import_tensorflow(verbose: str = "line"):
    """Import TensorFlow for a run with `trainer.verbose=verbose`, without its start-up info lines."""
    if verbose != "debug":
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if "tensorflow" in sys.modules or user_chose_level():
        import tensorflow

        return tensorflow
    if verbose == "debug":
        os.environ[LEVEL] = "0"
        import tensorflow

        return tensorflow
    os.environ[LEVEL] = QUIET_LEVEL
    os.environ[DEFAULTED] = "1"
    with tempfile.TemporaryFile(mode="w+b") as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not is_startup_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    return tensorflow
