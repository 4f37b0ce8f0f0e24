"""A config runs no code: every `_target_` that could reach instantiation is checked first.

Hydra instantiates `_target_` wherever it finds one under `hydra.callbacks`, `hydra.launcher` and
`hydra.sweeper`, and `logging.config.dictConfig` calls any `()` factory or handler `class` under
`hydra.job_logging` / `hydra.hydra_logging`. An experiment file or a config on `hydra.searchpath` can
set any of them, so a shared YAML file could open, copy or delete files (Hydra blocklists only
`os.system`). scaleflow therefore checks the composed config, Hydra's part included, before Hydra
instantiates anything, and refuses (ConfigError, exit 2, naming the key) every target that is not

  - one of scaleflow's own callbacks (SCALEFLOW_CALLBACKS),
  - a Hydra launcher or sweeper plugin class (`hydra._internal.core_plugins.*`, `hydra_plugins.*`)
    under `hydra.launcher` / `hydra.sweeper`, or an Optuna sampler/pruner under `hydra.sweeper`,
  - a standard `logging.*` class (or colorlog's formatter) in Hydra's logging configs,
  - or listed in `security.allow_targets` **on the command line**. A file cannot allow its own
    target: a list set by an experiment or searchpath file is ignored, or the check would be moot.

Example:
    python -m scaleflow +hydra.callbacks.x._target_=builtins.open   -> exit 2:
    scaleflow: config error: hydra.callbacks.x._target_='builtins.open': expected ...
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from scaleflow.errors import ConfigError

SCALEFLOW_CALLBACKS = frozenset({"scaleflow.sweep.callback.SweepSummary"})
PLUGIN_PREFIXES = ("hydra._internal.core_plugins.", "hydra_plugins.")
SWEEPER_EXTRA_PREFIXES = ("optuna.samplers.", "optuna.pruners.")
LOGGING_PREFIXES = ("logging.", "colorlog.")
ALLOW_KEY = "security.allow_targets"


def builtin_allowed(path: str, target: str) -> bool:
    """Whether scaleflow itself trusts `target` at config key `path` (dotted)."""
    if path.startswith("hydra.callbacks."):
        return target in SCALEFLOW_CALLBACKS
    if path.startswith(("hydra.launcher.", "hydra.sweeper.")):
        if target.startswith(PLUGIN_PREFIXES):
            return True
        return path.startswith("hydra.sweeper.") and target.startswith(SWEEPER_EXTRA_PREFIXES)
    if path.startswith(("hydra.job_logging.", "hydra.hydra_logging.")):
        return target.startswith(LOGGING_PREFIXES)
    return False


def targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every `_target_`, and of every dictConfig `()`/`class` in Hydra's
    logging configs, in a plain config tree."""
    if isinstance(node, dict):
        logging_cfg = path.startswith(("hydra.job_logging", "hydra.hydra_logging"))
        for key, value in node.items():
            key_path = f"{path}.{key}" if path else str(key)
            if key == "_target_" or (logging_cfg and key in ("()", "class") and isinstance(value, str)):
                yield key_path, value
            else:
                yield from targets(value, key_path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from targets(value, f"{path}[{i}]")


def command_line_allowed(overrides: Sequence[str]) -> list[str]:
    """`security.allow_targets=[a,b]` as given on the command line (the only place it counts)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    allowed: list[str] = []
    for o in OverridesParser.create().parse_overrides([x for x in overrides if ALLOW_KEY in x]):
        if o.get_key_element().lstrip("+~") != ALLOW_KEY or o.is_sweep_override():
            continue
        value = o.value()
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(ALLOW_KEY, value, "a list of import paths, e.g. [mypkg.callbacks.Mine]")
        allowed = [str(v) for v in values]
    return allowed


def check(config: Any, allowed: Iterable[str] = ()) -> None:
    """Raise ConfigError for the first `_target_` in `config` (a DictConfig with its hydra node,
    or a plain dict) that neither scaleflow trusts nor `allowed` lists."""
    from omegaconf import DictConfig, OmegaConf

    tree = OmegaConf.to_container(config, resolve=False) if isinstance(config, DictConfig) else config
    allowed = set(allowed)
    for path, target in targets(tree):
        if isinstance(target, str) and (target in allowed or builtin_allowed(path, target)):
            continue
        raise ConfigError(path, target, "no code to run: a config may instantiate only scaleflow's own "
                          "callbacks and Hydra's launcher/sweeper plugins",
                          f"If you trust it, allow it on the command line: {ALLOW_KEY}=[{target}]")


def check_overrides(overrides: Sequence[str], allowed: Iterable[str] = ()) -> None:
    """The same check on command-line overrides that set a target directly, sweeps included
    (a swept hydra key is never composed before Hydra runs it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    allowed = set(allowed)
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.get_key_element().lstrip("+~")
        last = key.rsplit(".", 1)[-1]
        if last != "_target_" and not (key.startswith(("hydra.job_logging", "hydra.hydra_logging"))
                                       and last in ("()", "class")):
            continue
        if o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            if not (isinstance(value, str) and (value in allowed or builtin_allowed(key, value))):
                raise ConfigError(key, value, "no code to run: a config may instantiate only scaleflow's own "
                                  "callbacks and Hydra's launcher/sweeper plugins",
                                  f"If you trust it, allow it on the command line: {ALLOW_KEY}=[{value}]")
