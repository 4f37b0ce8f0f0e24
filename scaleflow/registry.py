"""The registry: the one way config names become objects.

Every model, dataset, strategy, hardware target, exporter, callback and task (built-in or third-party) is
an entry point in one of the groups below. A config names *what* (`model=mlp`); the registry decides
*how* by loading the entry point of that name. A config can never name an import path to run.

A registered object is a class with:
    name    the option name (matches the entry point name and the config group option)
    Config  the dataclass schema for its config group node (optional; defaults to the group's base)
    conf    optional `pkg://...` Hydra search path that ships the plugin's config group files

Loading an entry point must not import TensorFlow: plugins import it inside their methods, so that
config-only commands stay fast.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from scaleflow.errors import ConfigError, did_you_mean, one_of

KINDS: dict[str, str] = {
    "model": "scaleflow.models",
    "dataset": "scaleflow.datasets",
    "strategy": "scaleflow.strategies",
    "hardware": "scaleflow.hardware",
    "exporter": "scaleflow.exporters",
    "callback": "scaleflow.callbacks",
    "logger": "scaleflow.loggers",
    "task": "scaleflow.tasks",
}

# The config group (and the key inside it) that selects an object of each kind.
CONFIG_GROUP = {"model": "model", "dataset": "data", "strategy": "strategy", "hardware": "hardware",
                "exporter": "export", "logger": "logger"}
SELECTOR_KEY = {"export": "format"}
# Kinds selected by a top-level key of the same name (`task=regression`), not by a config group.
TOP_LEVEL_KEY = {"task": "task"}


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    value: str  # "module:attr"
    distribution: str

    def load(self) -> Any:
        return _load(self.kind, self.name, self.value)


@functools.lru_cache(maxsize=None)
def _entry_points(kind: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=KINDS[kind]):
        found.setdefault(ep.name, ep)  # first installed wins, deterministically by path order
    return found


def registrations(kind: str) -> dict[str, Registration]:
    """What is registered for `kind`, by name, without loading anything."""
    out = {}
    for name, ep in sorted(_entry_points(kind).items()):
        dist = ep.dist.name if getattr(ep, "dist", None) is not None else "?"
        out[name] = Registration(kind, name, ep.value, dist)
    return out


def names(kind: str) -> list[str]:
    return sorted(_entry_points(kind))


@functools.lru_cache(maxsize=None)
def _load(kind: str, name: str, value: str) -> Any:
    obj = _entry_points(kind)[name].load()
    if getattr(obj, "name", name) != name:
        raise TypeError(f"{value} is registered as {kind} {name!r} but says its name is {obj.name!r}")
    return obj


def get(kind: str, name: str) -> Any:
    """The registered object called `name`, or a ConfigError naming the key and the choices."""
    if kind not in KINDS:
        raise ValueError(f"kind must be {one_of(KINDS)}, received: {kind!r}")
    available = _entry_points(kind)
    if name not in available:
        group = CONFIG_GROUP.get(kind, kind)
        key = TOP_LEVEL_KEY.get(kind) or f"{group}.{SELECTOR_KEY.get(group, 'name')}"
        raise ConfigError(key, name, one_of(available) if available else f"a registered {kind}",
                          did_you_mean(name, available))
    return _load(kind, name, available[name].value)


def all_loaded() -> dict[str, dict[str, Any]]:
    return {kind: {name: get(kind, name) for name in names(kind)} for kind in KINDS}


def refresh() -> None:
    """Forget what was discovered, so entry points installed since (e.g. by a test) are seen."""
    _entry_points.cache_clear()
    _load.cache_clear()


def conf_search_paths() -> list[str]:
    """Search paths for config group files that plugins ship (their `conf` attribute): every base
    class of a kind chosen through a config group declares it."""
    paths: list[str] = []
    for kind in CONFIG_GROUP:
        for name in names(kind):
            conf = get(kind, name).conf
            if conf and conf not in paths:
                paths.append(conf)
    return paths
