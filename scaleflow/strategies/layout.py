"""Layout rules: which variables of a model split over which axis of a device mesh.

A rule maps a variable-path pattern (a regular expression matched against the whole path, e.g.
`dense_0/kernel` or `dense_.*/kernel`) to one mesh axis name or null per dimension of the variable:

    strategy.layout={dense_0/kernel: [null, model], dense_0/bias: [model]}

Built-in models give default rules (`Model.layout_rules`); `strategy.layout` overrides them: a
variable that a user rule matches follows that rule only. Keras' own LayoutMap leaves a variable whose
path matches no key replicated, silently; here every rule must match at least one variable, name only
axes of the mesh and split dimensions the mesh divides, or the run stops with exit 2 naming the rule,
before training. Pure Python: `check_rules` runs in validation, `LayoutPlan` in the training process
as each variable is created. The axes are Keras' names (strategies/base.py: "batch", the data axis,
and "model"), as `mode=plan` checks them (planning/parallel.py) from the variables a model states.

Example:
    plan = LayoutPlan(user={"dense_0/kernel": [None, "model"]}, defaults={}, mesh={"batch": 1, "model": 2})
    plan.axes_for("dense_0/kernel", (8, 16))   # (None, "model")
    plan.check()                                # ConfigError for a rule that matched nothing
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from scaleflow.errors import ConfigError
from scaleflow.strategies.base import DATA_AXIS, MODEL_AXIS

MESH_AXES = (DATA_AXIS, MODEL_AXIS)
KEY = "strategy.layout"


def normalise(rules: Mapping[str, Any] | None, key: str = KEY) -> dict[str, tuple]:
    """{pattern: axes} with axes as a tuple of axis names / None; ConfigError for a malformed rule."""
    out: dict[str, tuple] = {}
    if rules is not None and not isinstance(rules, Mapping):
        raise ConfigError(key, rules, "a mapping {variable-path pattern: [axis or null per dimension]}",
                          "e.g. strategy.layout={dense_0/kernel:[null,model]}")
    for pattern, axes in (rules or {}).items():
        where = f"{key}.{pattern}"
        try:
            re.compile(str(pattern))
        except re.error as e:
            raise ConfigError(where, pattern, "a regular expression matched against variable paths",
                              f"it does not compile: {e}") from None
        if isinstance(axes, str) or axes is None:
            axes = [axes]
        try:
            axes = tuple(None if a in (None, "null", "None") else str(a) for a in axes)
        except TypeError:
            raise ConfigError(where, axes, "a list with one mesh axis name or null per dimension, "
                              "e.g. [null, model]") from None
        out[str(pattern)] = axes
    return out


def check_rules(rules: Mapping[str, tuple], mesh_axes: Sequence[str], key: str = KEY) -> None:
    """Every axis a rule names is an axis of the mesh, used at most once per rule (before TF)."""
    for pattern, axes in rules.items():
        named = [a for a in axes if a is not None]
        for axis in named:
            if axis not in mesh_axes:
                raise ConfigError(f"{key}.{pattern}", list(axes),
                                  "axes from the mesh (" + ", ".join(mesh_axes) + ") or null",
                                  f"{axis!r} is not an axis of the mesh")
        if len(set(named)) != len(named):
            raise ConfigError(f"{key}.{pattern}", list(axes), "each mesh axis at most once per variable")


@dataclass
class LayoutPlan:
    """The rules of one run, resolved variable by variable as the model and optimizer are built.

    Args:
        user: `strategy.layout` rules (normalised); they win over `defaults` for a variable they match.
        defaults: the model's default rules.
        mesh: axis name -> size, e.g. {"batch": 2, "model": 2}.
    """

    user: Mapping[str, tuple]
    defaults: Mapping[str, tuple]
    mesh: Mapping[str, int]
    applied: dict = field(default_factory=dict)  # variable path -> (rule source, pattern, axes, shape)
    seen: list = field(default_factory=list)  # every variable path asked about, in creation order

    problems: list = field(default_factory=list)  # ConfigErrors found while variables were created

    def _matches(self, rules: Mapping[str, tuple], path: str) -> list[str]:
        return [p for p in rules if re.fullmatch(p, path)]

    def resolve(self, path: str, shape: Sequence[int]) -> tuple | None:
        """The axes of variable `path` with `shape` (one per dimension), or None: replicated. Called
        inside Keras as each variable is created, so a rule that does not fit is recorded (the
        variable stays replicated) and raised by `check` once the model is built."""
        try:
            return self.axes_for(path, shape)
        except ConfigError as e:
            self.problems.append(e)
            return None

    def axes_for(self, path: str, shape: Sequence[int]) -> tuple | None:
        """As `resolve`, raising ConfigError when the rule that applies does not fit the variable."""
        shape = tuple(int(d) for d in shape)
        self.seen.append(path)
        for source, rules in (("strategy.layout", self.user), ("model default", self.defaults)):
            found = self._matches(rules, path)
            if not found:
                continue
            if len(found) > 1:
                raise ConfigError(f"{KEY}.{found[0]}", list(rules[found[0]]), "one rule per variable",
                                  f"variable {path!r} is also matched by {found[1]!r} ({source} rules)")
            pattern = found[0]
            axes = self._fitted(source, pattern, rules[pattern], path, shape)
            self.applied[path] = (source, pattern, axes, shape)
            return axes
        return None

    def _fitted(self, source: str, pattern: str, axes: tuple, path: str, shape: tuple) -> tuple:
        key = f"{KEY}.{pattern}" if source == "strategy.layout" else f"{KEY} (model default rule {pattern!r})"
        hint = "" if source == "strategy.layout" else "; override it with strategy.layout={%s: [...]}" % pattern
        given = axes
        if len(axes) != len(shape):
            raise ConfigError(key, list(given), f"{len(shape)} entries, one per dimension of {path} {list(shape)}",
                              f"the rule gives {len(axes)}{hint}")
        for dim, (size, axis) in enumerate(zip(shape, axes)):
            if axis is not None and size % self.mesh[axis]:
                raise ConfigError(key, list(given), "mesh axes that divide the dimensions they split",
                                  f"dimension {dim} of {path} {list(shape)} has {size}, which the "
                                  f"{axis!r} axis ({self.mesh[axis]} devices) does not divide{hint}")
        return tuple(axes)

    def check(self) -> None:
        """After the model is built: the first rule that did not fit, else a user rule that matched
        no variable (Keras would silently replicate). Default rules describe the built-in model."""
        if self.problems:
            raise self.problems[0]
        used = {pattern for source, pattern, _, _ in self.applied.values() if source == "strategy.layout"}
        for pattern, axes in self.user.items():
            if pattern not in used:
                raise ConfigError(f"{KEY}.{pattern}", list(axes), "a pattern matching at least one variable path "
                                  "(a full match)", "it matches none of: " + ", ".join(self.seen))

    def report(self) -> dict:
        """run.json's `layout`: the rules and what each split variable follows."""
        return {"rules": {p: list(a) for p, a in self.user.items()},
                "default_rules": {p: list(a) for p, a in self.defaults.items()},
                "variables": {path: {"axes": list(axes), "rule": pattern, "from": source}
                              for path, (source, pattern, axes, _) in self.applied.items()}}


def shard_bytes(shape: Sequence[int], itemsize: int, axes: Sequence[Any] | None, mesh: Mapping[str, int]) -> int:
    """Bytes one device holds of a variable of `shape` laid out along `axes` (None: replicated)."""
    size = math.prod(int(d) for d in shape) * itemsize
    if not axes:
        return size
    split = math.prod(mesh[a] for a in axes if a is not None)
    return size // split
