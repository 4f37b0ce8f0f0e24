"""A config node against its schema dataclass: unknown keys, choices and ranges (field metadata).

A leaf module, so that any part of scaleflow can check a node without importing the whole validation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scaleflow.errors import ConfigError, did_you_mean, one_of


def _check_field(key: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(key, value, one_of(choices), did_you_mean(value, choices))
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(key, value, f"a number >= {lo}")
        if hi is not None and value > hi:
            raise ConfigError(key, value, f"a number <= {hi}")


def _check_node(prefix: str, node: DictConfig, schema_cls: type) -> None:
    known = [f.name for f in dataclasses.fields(schema_cls)]
    for key in node.keys():
        if key not in known:  # `+group.key=...` bypasses Hydra's struct check
            raise ConfigError(f"{prefix}.{key}", OmegaConf.select(node, str(key), throw_on_missing=False),
                              f"a key of {prefix}: " + ", ".join(sorted(known)), did_you_mean(key, known))
    for f in dataclasses.fields(schema_cls):
        if f.name not in node:
            continue
        value = OmegaConf.select(node, f.name, throw_on_missing=False)
        _check_field(f"{prefix}.{f.name}", value, dict(f.metadata))


check_node = _check_node  # public name, for nested nodes checked by the modules that own them
