"""Semantic validation of a composed config, before TensorFlow is imported.

Hydra and the structured schema already reject unknown keys and wrong types. This module checks what
types cannot express, using the metadata in `config/schema.py` (choices, ranges, paths), then the
cross-field rules each registered object declares in its `validate(cfg)` classmethod, then the rules
each concern owns (profile, encryption, task, training controls, masking, the mode's own checks).
Every failure is one `ConfigError` naming the key, the value and what is allowed.

It sits above every package whose rules it calls (README, Architecture: the layers), so `config/`
stays the schema and its leaf checks, importable by everything.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from scaleflow import registry
from scaleflow.config.fields import _check_field, _check_node
from scaleflow.config.store import schema_for
from scaleflow.errors import ConfigError

GROUPS = ("model", "data", "strategy", "hardware", "trainer", "export", "profile", "logger")
# Plain (non-group) nodes and their schema.
NODES = {"plan": "PlanConfig", "sweep": "SweepConfig", "registry": "RegistryConfig", "evaluate": "EvaluateConfig",
         "predict": "PredictConfig", "security": "SecurityConfig", "explain": "ExplainConfig",
         "deploy": "DeployConfig", "serve": "ServeConfig"}
INFERENCE_MODES = ("evaluate", "predict", "explain")



def _auto_or_positive_int(key: str, value: Any) -> None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    raise ConfigError(key, value, "'auto' or an integer >= 1")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid value in `cfg`."""
    from scaleflow.modes import MODES

    _check_field("mode", cfg.mode, {"choices": sorted(MODES)})
    if cfg.mode == "plugins":
        return
    selected: dict[str, Any] = {}
    for group in GROUPS:
        node = cfg[group]
        selector = registry.SELECTOR_KEY.get(group, "name")
        name = node.get(selector) if group in registry.CONFIG_GROUP.values() else None
        if name is not None:
            kind = {v: k for k, v in registry.CONFIG_GROUP.items()}[group]
            selected[kind] = registry.get(kind, name)  # unknown name -> ConfigError, did-you-mean
        _check_node(group, node, schema_for(group, name))

    t = cfg.trainer
    _auto_or_positive_int("trainer.steps_per_execution", t.steps_per_execution)
    if t.jit_compile not in ("auto", True, False):
        raise ConfigError("trainer.jit_compile", t.jit_compile, "'auto', true or false")
    _auto_or_positive_int("export.version", cfg.export.version)
    from scaleflow.profiling.checks import check_profile_config

    check_profile_config(cfg)  # profile.batches within the epoch, profile.port

    from scaleflow.config import schema

    for key, cls_name in NODES.items():
        if key in cfg:
            _check_node(key, cfg[key], getattr(schema, cls_name))

    from scaleflow.security.crypto import check_config as check_encryption

    check_encryption(cfg)  # keys of encrypted inputs and checkpoints, before data is read
    from scaleflow.export.seal import check_config as check_seal

    check_seal(cfg)  # export.seal: its key, before training
    from scaleflow.tasks.checks import check_task_config

    check_task_config(cfg)  # task, loss, metrics, class names
    from scaleflow.training.controls import check_controls

    check_controls(cfg)  # schedule, clipping, early stopping, keep_best
    # Cross-field rules owned by each selected object (its `validate` classmethod, declared on every
    # base class; no TensorFlow import allowed there). The dataset's include the sharding rules.
    for kind, obj in selected.items():
        obj.validate(cfg)
    from scaleflow.data.mask import check_config

    check_config(cfg)  # data.mask: rules, their key (exit 2 before any record is read)
    if cfg.mode == "train":  # a model that cannot be written is found now, not after training
        from scaleflow.export.target import check_export_target

        check_export_target(cfg, _run_dir())
    elif cfg.mode in INFERENCE_MODES:
        from scaleflow.inference.source import check

        check(cfg)  # the model to load and the data to feed it: found and matched before TensorFlow
    elif cfg.mode == "deploy":
        from scaleflow.modes.deploy import check as check_deploy

        check_deploy(cfg)  # run= or deploy.model_dir, replica bounds
    elif cfg.mode == "serve":
        from scaleflow.modes.serve import check as check_serve

        check_serve(cfg)  # a model dir holding at least one verified export version
    if cfg.mode not in INFERENCE_MODES:
        for key in ("run", "model_dir"):
            if key == "run" and cfg.mode in ("deploy", "serve"):
                continue  # mode=deploy deploys (mode=serve serves) the export of run=<run dir>
            if cfg.get(key) is not None:
                raise ConfigError(key, cfg[key], f"null with mode={cfg.mode}",
                                  f"{key}= names the model of mode=evaluate or mode=predict")


def _run_dir() -> str | None:
    """The job's run dir once Hydra runs it (relative export.dir lives there), else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)  # None until Hydra runs it
