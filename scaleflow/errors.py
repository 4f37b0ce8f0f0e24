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


class DataError(ConfigError):
    """Bad data found before training: names the file, where in it (line, record, column) and the
    value, with what would fix it (exit 2, like a config error: the run never starts).

    Example:
        DataError("iris.csv", "'abc' is not a number", line=7, record=5, column="petal_width",
                  hint="List it in data.categorical_columns or data.ignore_columns")
        -> iris.csv line 7 (record 5), column 'petal_width': 'abc' is not a number. List it in ...
    """

    def __init__(self, path: str, problem: str, *, line: int | None = None, record: int | None = None,
                 column: str | None = None, hint: str | None = None):
        self.key, self.value, self.allowed, self.hint = "data.path", path, problem, hint
        self.path, self.line, self.record, self.column = path, line, record, column
        where = str(path)
        if line is not None:
            where += f" line {line}" + (f" (record {record})" if record is not None else "")
        if column is not None:
            where += ("," if line is not None else "") + f" column {column!r}"
        message = f"{where}: {problem}" + (f". {hint}" if hint else "")
        ScaleflowError.__init__(self, message)


def did_you_mean(value: Any, candidates: Iterable[str]) -> str | None:
    """'Did you mean 'x'?' for the closest candidate, or None when nothing is close."""
    matches = difflib.get_close_matches(str(value), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"Did you mean {matches[0]!r}?" if matches else None


def one_of(candidates: Iterable[str]) -> str:
    return "one of " + ", ".join(sorted(map(str, candidates)))
