"""Registers the structured schema in Hydra's ConfigStore.

`scaleflow_schema` is the typed top level (conf/config.yaml extends it). Every registered model,
dataset, strategy, hardware target and exporter contributes `schema/<group>/<name>`, built from its
`Config` dataclass, which the option's YAML file extends:

    # conf/model/mlp.yaml
    defaults:
      - /schema/model/mlp@_here_
      - _self_
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from scaleflow import registry
from scaleflow.config import schema

GROUP_BASE = {
    "model": schema.ModelConfig,
    "data": schema.DataConfig,
    "strategy": schema.StrategyConfig,
    "hardware": schema.HardwareConfig,
    "export": schema.ExportConfig,
    "logger": schema.LoggerConfig,
}
FIXED_GROUPS = {"trainer": schema.TrainerConfig, "profile": schema.ProfileConfig}


def schema_for(group: str, name: str | None) -> type:
    """The dataclass that types config group `group` when option `name` is selected."""
    if group in FIXED_GROUPS:
        return FIXED_GROUPS[group]
    kind = {v: k for k, v in registry.CONFIG_GROUP.items()}[group]
    if name in registry.names(kind):
        return registry.get(kind, name).Config
    return GROUP_BASE[group]


def register() -> None:
    """Store the schema of everything registered now (cheap, so it is simply redone each command:
    a plugin installed since is picked up)."""
    cs = ConfigStore.instance()
    cs.store(name="scaleflow_schema", node=schema.Config)
    for group, node in FIXED_GROUPS.items():
        cs.store(group=f"schema/{group}", name="base", node=node)
    for kind, group in registry.CONFIG_GROUP.items():
        cs.store(group=f"schema/{group}", name="base", node=GROUP_BASE[group])
        for name in registry.names(kind):
            cs.store(group=f"schema/{group}", name=name, node=schema_for(group, name))
