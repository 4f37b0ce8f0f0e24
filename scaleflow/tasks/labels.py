"""Reading labels as a task needs them, in NumPy (no TensorFlow): every problem is named by row and value.

Classification labels are class ids or class names. Integer-like labels keep their values (label 3 is
class 3, whatever else the file holds); strings are names, ordered as `data.class_names` lists them or,
without that list, sorted. An empty or non-integer numeric label is an error, never a silent new class.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from scaleflow.errors import ConfigError

Where = Callable[[int], str]


def default_where(index: int) -> str:
    return f"record {index}"


class LabelError(ConfigError):
    """A label the task cannot read: names the label key, the value, what is allowed and the row."""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value).strip()


def as_number(value: Any) -> float | None:
    """The label as a float, or None if it is not numeric ('' and 'cat' are not)."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    try:
        return float(_text(value))
    except ValueError:
        return None


def class_ids(labels: Sequence[Any], *, key: str, where: Where = default_where,
              class_names: Sequence[str] | None = None, min_classes: int = 0,
              task: str = "classification") -> tuple[np.ndarray, list[str]]:
    """(int32 class ids, class names) for single-label data; see the module docstring for the rules."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise LabelError(key, f"an array of shape {arr.shape}", f"one label per record for task={task}")
    names = [str(n) for n in class_names] if class_names else None
    if arr.dtype.kind in "iub":
        return _integer_ids(arr.astype(np.int64), key, where, names, min_classes, task)
    if arr.dtype.kind == "f":
        return _integer_ids(_integers(arr, key, where, task), key, where, names, min_classes, task)
    texts = [_text(v) for v in arr.tolist()]
    for i, t in enumerate(texts):
        if t == "":
            raise LabelError(key, t, f"a class id or class name for task={task}", f"The label of {where(i)} is empty")
    numbers = [as_number(t) for t in texts]
    if all(n is not None for n in numbers):  # every label is numeric: ids, kept as they are
        return _integer_ids(_integers(np.array(numbers), key, where, task, shown=texts), key, where, names,
                            min_classes, task)
    vocabulary = names if names is not None else sorted(set(texts))
    index = {c: i for i, c in enumerate(vocabulary)}
    ids = np.empty(len(texts), dtype=np.int32)
    for i, t in enumerate(texts):
        if t not in index:
            raise LabelError(key, t, "one of data.class_names: " + ", ".join(vocabulary),
                             f"The label of {where(i)} is not a listed class")
        ids[i] = index[t]
    return ids, list(vocabulary)


def _integers(values: np.ndarray, key: str, where: Where, task: str, shown: list[str] | None = None) -> np.ndarray:
    for i, v in enumerate(values.tolist()):
        if not math.isfinite(v) or v != round(v):
            raise LabelError(key, shown[i] if shown else v, f"an integer class id for task={task}",
                             f"The label of {where(i)} is not an integer; for numeric targets use task=regression")
    return values.astype(np.int64)


def _integer_ids(ids: np.ndarray, key: str, where: Where, names: list[str] | None, min_classes: int,
                 task: str) -> tuple[np.ndarray, list[str]]:
    negative = np.flatnonzero(ids < 0)
    if len(negative):
        i = int(negative[0])
        raise LabelError(key, int(ids[i]), f"a class id >= 0 for task={task}", f"The label of {where(i)} is negative")
    count = max(int(ids.max()) + 1 if len(ids) else 0, min_classes)
    if names is not None:
        beyond = np.flatnonzero(ids >= len(names))
        if len(beyond):
            i = int(beyond[0])
            raise LabelError(key, int(ids[i]), f"a class id < {len(names)} (the length of data.class_names)",
                             f"The label of {where(i)} has no class name")
        return ids.astype(np.int32), names
    return ids.astype(np.int32), [str(c) for c in range(count)]


def check_class_count(names: Sequence[str], max_classes: int, key: str, task: str) -> None:
    if len(names) < 2:
        raise LabelError(key, ", ".join(names) or "(no labels)", f"at least 2 classes for task={task}",
                         "One class only: there is nothing to learn")
    if len(names) > max_classes:
        raise LabelError(key, f"{len(names)} classes", f"at most data.max_classes={max_classes} classes",
                         "Raise data.max_classes if that many classes are meant (or is this a regression target?)")


def numeric_matrix(labels: Any, *, key: str, where: Where, task: str, allowed: str) -> np.ndarray:
    """Labels as a float (N, K) matrix; a missing or non-numeric value is named by row."""
    arr = np.asarray(labels)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise LabelError(key, f"an array of shape {arr.shape}", f"one value or one row of values per record for "
                         f"task={task}")
    if arr.dtype.kind in "iubf":
        out = arr.astype(np.float64)
    else:
        out = np.empty(arr.shape, dtype=np.float64)
        for (i, j), v in np.ndenumerate(arr):
            n = as_number(v)
            if n is None:
                raise LabelError(key, _text(v), allowed, f"The label of {where(i)} is not a number")
            out[i, j] = n
    bad = np.argwhere(~np.isfinite(out))
    if len(bad):
        i, j = map(int, bad[0])
        raise LabelError(key, float(out[i, j]), allowed, f"The label of {where(i)} is not finite")
    return out
