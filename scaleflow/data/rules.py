"""Sharding rules that need only the config (no data, no TensorFlow): checked in validation, before
anything launches (`Dataset.validate`), and again by the planner along with those that need the data.
"""

from __future__ import annotations

from scaleflow.errors import ConfigError


def check_shard_config(cfg) -> None:
    """The sharding rules that need only the config (no data, no TensorFlow), for config validation
    before anything launches; `plan_input` checks them again along with those that need the data.

    Example:
        >>> check_shard_config(compose(["data.shard=hash", "data.reshuffle_each_epoch=true"]))
        Traceback (most recent call last):
        scaleflow.errors.ConfigError: data.reshuffle_each_epoch=True: expected false unless data.shard=random...
    """
    from scaleflow import registry

    data = cfg.data
    check_reshuffle(data)
    if data.shard_level != "file":
        return
    blocker = record_keyed(data)
    if registry.get("dataset", data.name).in_memory:
        blocker = f"the {data.name} dataset is read into memory, not by file"
    if blocker:
        raise ConfigError("data.shard_level", "file", "record or auto for this source",
                          f"File-level sharding is impossible: {blocker}")


def check_reshuffle(config) -> None:
    if config.reshuffle_each_epoch and config.shard != "random":
        raise ConfigError("data.reshuffle_each_epoch", True, "false unless data.shard=random",
                          f"data.shard={config.shard} assigns the same records every epoch by definition")


def record_keyed(config) -> str | None:
    """Why the config itself asks for record-level sharding, or None."""
    if config.shard_key:
        return f"data.shard_key={config.shard_key} keys records, not files"
    if config.reshuffle_each_epoch and config.shard == "random":
        return "data.reshuffle_each_epoch redraws records each epoch"
    return None
