"""Errors a user can act on. They are printed as one message, never as a traceback."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class ScaleflowError(Exception):
    """An error caused by the environment or the run, reported without a traceback (exit 1)."""

    exit_code = 1


class ConfigError(ScaleflowError):
    """A bad config value: names the key, the value received and what is allowed (exit 2)."""

    exit_code = 2
    composition = False  # True when Hydra could not compose the config at all

    def __init__(self, key: str, value: Any, allowed: str, hint: str | None = None):
        self.key, self.value, self.allowed, self.hint = key, value, allowed, hint
        message = f"{key}={value!r}: expected {allowed}"
        if hint:
            message += f". {hint}"
        super().__init__(message)


def did_you_mean(value: Any, candidates: Iterable[str]) -> str | None:
    """'Did you mean 'x'?' for the closest candidate, or None when nothing is close."""
    matches = difflib.get_close_matches(str(value), list(candidates), n=1, cutoff=0.6)
    return f"Did you mean {matches[0]!r}?" if matches else None


def one_of(candidates: Iterable[str]) -> str:
    return "one of " + ", ".join(sorted(map(str, candidates)))
