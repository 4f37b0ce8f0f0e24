"""Model labels: which export version is `stable` and which is `canary`, with the moves that led there.

One file per model, `<export.dir>/<export.name>/labels.json`, beside the version directories:

    {
      "stable": 3,                 # an int version, or null when nothing holds the label
      "canary": 4,
      "history": [                 # every move, oldest first; `mode=deploy deploy.rollback=true` replays it
        {"label": "stable", "from": 2, "to": 3, "action": "promote", "reason": "...", "at": "2026-11-27T..."},
        ...
      ]
    }

Readers (the server, `mode=models`) take only the label keys (`read_labels`); anything else in the file is
bookkeeping. The file is replaced atomically (write to a temp file, fsync, rename), so a reader never sees
a half-written file and needs no lock; writers serialise their read-modify-write with an exclusive
`flock` on the model directory, so two runs finishing at once cannot lose each other's move.
Pure Python: config-only modes and the server use it without TensorFlow.

Example:

    from scaleflow.deploy import labels
    labels.move(root, {"stable": 3}, action="promote", reason="accuracy 0.91 > 0.88 (version 2)")
    labels.read_labels(root)            # {"stable": 3}
    labels.rollback(root)               # stable goes back to 2; returns (3, 2)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from typing import Callable, Iterator

from scaleflow.errors import ScaleflowError

LABELS_FILE = "labels.json"
LABELS = ("stable", "canary")
MAX_HISTORY = 1000  # bounded so the file stays small; old moves are the least likely rollback targets


class LabelsError(ScaleflowError):
    """labels.json is unreadable or a move is impossible (the message names the file and why)."""


def labels_path(root: str) -> str:
    """`<export.dir>/<export.name>/labels.json` for the model directory `root`."""
    return os.path.join(root, LABELS_FILE)


def read_state(root: str) -> dict:
    """The whole file: {"stable": int|None, "canary": int|None, "history": [...]}; empty when absent."""
    path = labels_path(root)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {label: None for label in LABELS} | {"history": []}
    except (OSError, ValueError) as e:
        raise LabelsError(f"{path} is unreadable ({type(e).__name__}: {e}); fix or remove it") from None
    if not isinstance(data, dict):
        raise LabelsError(f"{path} must hold a JSON object with 'stable' and 'canary', got {type(data).__name__}")
    state = {"history": data.get("history") if isinstance(data.get("history"), list) else []}
    for label in LABELS:
        value = data.get(label)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LabelsError(f"{path}: {label}={value!r} is not a version number (a positive integer or null)")
        state[label] = value
    return state


def read_labels(root: str) -> dict[str, int]:
    """{label: version} for the labels that are set, e.g. {"stable": 3, "canary": 4}; {} when none."""
    state = read_state(root)
    return {label: state[label] for label in LABELS if state[label] is not None}


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
    # The lock is taken on the model directory itself (Linux allows flock on a directory), so no
    # lock file joins the version directories; the OS releases it when the holder exits in any way.
    os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(root: str, state: dict) -> None:
    from scaleflow.manifest import atomic_write_json
    from scaleflow.security import audit

    written = len(read_state(root)["history"])  # under the lock: the moves before are on disk
    new = state["history"][written:]
    state = {**{label: state.get(label) for label in LABELS}, "history": state["history"][-MAX_HISTORY:]}
    atomic_write_json(labels_path(root), state)
    for move in new:  # promotion, canary, rollback: who moved which label, in the audit log
        audit.record(str(move.get("action") or "set"), model_dir=os.path.abspath(root),
                     **{k: v for k, v in move.items() if k not in ("action", "at")})


@contextlib.contextmanager
def editing(root: str) -> Iterator[dict]:
    """Read-modify-write under the labels lock: yields the state; `record(state, ...)` changes it;
    it is written (atomically) when the block ends without an exception. Use it when a decision must
    see the labels it changes (promotion evaluates the current stable while holding the lock, so two
    runs finishing together cannot both beat the same stable). Do not nest."""
    with _locked(root):
        state = read_state(root)
        before = json.dumps(state, sort_keys=True, default=str)
        yield state
        if json.dumps(state, sort_keys=True, default=str) != before:
            _write(root, state)


def record(state: dict, label: str, version: int | None, *, action: str = "set", reason: str = "",
           extra: dict | None = None) -> None:
    """Point `label` at `version` (None removes it) in `state`, appending the move to its history."""
    if label not in LABELS:
        raise LabelsError(f"unknown label {label!r}; labels are {', '.join(LABELS)}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise LabelsError(f"{label}={version!r} is not a version number")
    if state[label] == version:
        return
    state["history"].append({"label": label, "from": state[label], "to": version, "action": action,
                             "reason": reason, "at": _now(), **(extra or {})})
    state[label] = version


def move(root: str, changes: dict[str, int | None], *, action: str = "set", reason: str = "",
         extra: dict | None = None) -> dict:
    """Point each label in `changes` at a version (None removes it), atomically, recording the move.

    Args:
        root: the model directory `<export.dir>/<export.name>`.
        changes: e.g. {"stable": 3} or {"stable": 4, "canary": None}.
        action: why, as a word: promote | canary | rollback | set.
        reason: one human sentence stored in the history.
        extra: more fields for the history entry (e.g. the objective values compared).
    Returns: the new state.
    """
    with editing(root) as state:
        for label, version in changes.items():
            record(state, label, version, action=action, reason=reason, extra=extra)
    return state


def stable_lineage(history: list[dict]) -> list[int]:
    """The stack of stable versions implied by the history: a move pushes, a rollback pops."""
    stack: list[int] = []
    for entry in history:
        if entry.get("label") != "stable":
            continue
        if entry.get("action") == "rollback":
            if stack:
                stack.pop()
        elif entry.get("to") is not None:
            stack.append(entry["to"])
    return stack


def rollback(root: str, *, usable: Callable[[int], str | None] | None = None, reason: str = "") -> tuple[int, int]:
    """Move `stable` back to the stable version before it; returns (from, to).

    Repeated rollbacks walk further back (a rollback is undone from the lineage, not re-recorded as a
    new stable). `usable(version)` may return a reason the target cannot serve (missing or tampered
    directory); such a version is skipped, and the skip is recorded in the reason.
    """
    with _locked(root):
        state = read_state(root)
        current = state["stable"]
        if current is None:
            raise LabelsError(f"{labels_path(root)}: no stable version to roll back from")
        lineage = stable_lineage(state["history"])
        if lineage and lineage[-1] == current:
            lineage.pop()
        skipped = []
        while lineage:
            candidate = lineage[-1]
            problem = usable(candidate) if usable else None
            if candidate != current and problem is None:
                break
            if problem is not None:
                skipped.append(f"{candidate} ({problem})")
            lineage.pop()
            # each skipped version counts as rolled back over, so the next rollback goes past it too
            state["history"].append({"label": "stable", "from": candidate, "to": None, "action": "rollback",
                                     "reason": "skipped: " + (problem or "same as current"), "at": _now()})
        if not lineage:
            raise LabelsError(f"{labels_path(root)}: stable={current} has no earlier stable version to roll back to"
                              + (f" (unusable: {', '.join(skipped)})" if skipped else ""))
        target = lineage[-1]
        text = reason or f"rollback of stable from {current} to {target}"
        if skipped:
            text += f"; skipped {', '.join(skipped)}"
        state["history"].append({"label": "stable", "from": current, "to": target, "action": "rollback",
                                 "reason": text, "at": _now()})
        state["stable"] = target
        _write(root, state)
    return current, target


def _now() -> str:
    from scaleflow.manifest import now

    return now()
