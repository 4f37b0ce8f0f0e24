"""Command line: `python -m scaleflow [group=option ...] [key=value ...] [-m] [--cfg job] [--help]`.

Hydra parses and composes; scaleflow adds three things around it:
1. Plugins' config group files join Hydra's search path (from the registry), and the choices a
   strategy implies (`strategy=tpu` -> `hardware=tpu`) join the overrides, once per command.
2. Every config error (Hydra's own included) is found before TensorFlow is imported and reported as
   one message naming the key, the value and what is allowed, with exit status 2.
3. A single run composes and validates its config once (`run_single`), then runs it as Hydra's own
   `run` would (run dir, .hydra/, logging, callbacks). A sweep checks each swept value's composition
   up front; its launcher composes each job, which validates its own config once.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Sequence

from scaleflow import tf_logging
from scaleflow.config.implied import with_implied
from scaleflow.errors import ConfigError, DataError, ScaleflowError, did_you_mean, one_of

from scaleflow.config.command import (CONFIG_MODULE, CONFIG_NAME, OVERRIDES_ENV, TASK_NAME,  # noqa: F401
                                      current_overrides)
log = logging.getLogger("scaleflow")


def _fail(error: BaseException, code: int) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
    kind = "data error" if isinstance(error, DataError) else \
        "config error" if isinstance(error, ConfigError) else getattr(error, "kind", "error")
    from scaleflow.security.redact import redact_text

    print(f"scaleflow: {kind}: {redact_text(str(error))}", file=sys.stderr)
    sys.exit(code)


# ------------------------------------------------------------------------ Hydra error translation
def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _options(group: str) -> list[str]:
    return group_options().get(group) or _loader_options(group)


def _loader_options(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    return [o for o in loader.get_group_options(group) if not group.startswith("schema")]


def _groups() -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    return [g for g in GlobalHydra.instance().config_loader().list_groups("")
            if g not in ("hydra", "schema")]


def _given(key: str, overrides: Sequence[str]) -> Any:
    """The value `overrides` give `key` (the last one wins, as in Hydra), or None."""
    for o in reversed(overrides):
        k, _, v = o.lstrip("+~").partition("=")
        if k == key:
            return v
    return None


def _node_keys(key: str, overrides: Sequence[str]) -> list[str]:
    """Keys the schema allows beside `key` (for did-you-mean)."""
    from scaleflow.config import schema
    from scaleflow.config.store import schema_for

    parent = key.rsplit(".", 1)[0] if "." in key else ""
    group, *nested = parent.split(".") if parent else [""]
    try:
        node = schema.Config.__dataclass_fields__.get(group)
        if group and node is not None and isinstance(node.default_factory, type):
            cls = node.default_factory  # a plain node (serve, plan, registry, ...), not a config group
        else:
            option = _given(group, overrides) or default_options().get(group)
            cls = schema_for(group, option) if group else schema.Config
        for name in nested:  # e.g. trainer.early_stopping: a dataclass field of the group's schema
            cls = cls.__dataclass_fields__[name].default_factory
    except Exception:  # noqa: BLE001 - best effort: a hint, not a check
        return []
    return list(getattr(cls, "__dataclass_fields__", {}))


def default_options() -> dict[str, str]:
    """group -> option chosen by conf/config.yaml's defaults list (the one place they are set)."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(importlib_file(CONFIG_MODULE, "config.yaml")).defaults
    return {k: v for entry in defaults if not isinstance(entry, str) for k, v in entry.items()
            if isinstance(v, str)}


def _unknown_key(key: str, overrides: Sequence[str]) -> ConfigError:
    """An override naming a key or group that does not exist."""
    value = _given(key, overrides)
    if "." not in key:
        groups = _groups()
        return ConfigError(key, value, "a config group (" + ", ".join(groups) + ") or a top-level key (mode)",
                           did_you_mean(key, groups + ["mode"]))
    keys = _node_keys(key, overrides)
    parent = key.rsplit(".", 1)[0]
    return ConfigError(key, value, f"a key of {parent}: " + ", ".join(sorted(keys)) if keys else "a known key",
                       did_you_mean(key.rsplit(".", 1)[1], keys))


def translate(exc: BaseException, overrides: Sequence[str] = ()) -> ConfigError:
    """Turn a Hydra / OmegaConf composition error into a ConfigError naming key, value, allowed
    (`overrides`: the command line's, for the value and the did-you-mean)."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    for e in _chain(exc):
        if isinstance(e, ConfigError):
            return e
    for e in _chain(exc):
        msg = str(e)
        if isinstance(e, MissingConfigException):
            m = re.search(r"Could not find '([^']+)/([^'/]+)'", msg)
            if m:
                group, value = m.group(1), m.group(2)
                options = _options(group)
                return ConfigError(group, value, one_of(options), did_you_mean(value, options))
            m = re.search(r"Could not load '([^']+)'", msg)
            if m:
                return ConfigError("config", m.group(1), "an existing config")
        if isinstance(e, OverrideParseException):
            return ConfigError("override", e.override, "key=value, group=option, +key=value or a sweep a,b,c",
                               msg.splitlines()[0].rstrip("."))
        if isinstance(e, OmegaConfBaseException):
            key = getattr(e, "full_key", None) or ""
            first = str(getattr(e, "msg", msg)).splitlines()[0]
            m = re.search(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", first)
            if m:
                return ConfigError(key, m.group(1), f"a value of type {m.group(3).lower()}")
            m = re.search(r"Key '([^']+)' (?:not in|is not in struct)", first)
            if m:
                return _unknown_key(key or m.group(1), overrides)
            m = re.search(r"Value '(.*)' is not a valid (\w+)", first)  # a bool given "maybe"
            if m:
                return ConfigError(key, m.group(1), "true or false" if m.group(2) == "bool" else f"a valid {m.group(2)}")
            if "Missing mandatory value" in first:
                return ConfigError(key, "???", "a value", "Set it on the command line")
            return ConfigError(key or "config", "", "a valid value", first)
        m = re.search(r"Could not (?:override|delete|append to) '([^']+)'", msg)
        if m:
            return _unknown_key(m.group(1), overrides)
        m = re.search(r"Key '([^']+)' (?:not in|is not in struct)", msg)
        if m:
            return _unknown_key(m.group(1), overrides)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError("config", "", "a valid configuration", first)


# ------------------------------------------------------------------------------- pre-validation
def search_path_override(overrides: Sequence[str]) -> list[str]:
    """`overrides` with the plugins' config dirs on Hydra's search path. A user's own
    `hydra.searchpath=[...]` keeps its entries and gets the plugins' appended: Hydra reads only the
    first searchpath override, so adding a second one (or none) would drop one of the two."""
    from scaleflow import registry

    paths = registry.conf_search_paths()
    if not paths:
        return list(overrides)
    merged, found = [], False
    for override in overrides:
        key, sep, value = override.partition("=")
        if key.lstrip("+") == "hydra.searchpath" and sep and not found:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            try:
                user = OverridesParser.create().parse_override(override).value()
            except Exception:  # noqa: BLE001 - a malformed override is reported by composition
                user = None
            if isinstance(user, list):
                override = _searchpath_override(key, [*map(str, user), *(p for p in paths if p not in user)])
            found = True
        merged.append(override)
    return merged if found else merged + [_searchpath_override("hydra.searchpath", paths)]


def _searchpath_override(key: str, paths: Sequence[str]) -> str:
    quoted = ("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
    return f"{key}=[{','.join(quoted)}]"


def check_output_dir(overrides: Sequence[str], multirun: bool) -> None:
    """`hydra.run.dir` (`hydra.sweep.dir` with -m) must be a directory or creatable as one; Hydra
    itself fails with a traceback when it (or a parent) is a file. Only the literal part of the path,
    up to the first interpolation, can be checked before Hydra runs."""
    section = "sweep" if multirun else "run"
    key = f"hydra.{section}.dir"
    value = _given(key, overrides)
    if value is None:
        from omegaconf import OmegaConf

        raw = OmegaConf.to_container(OmegaConf.load(importlib_file(CONFIG_MODULE, "config.yaml")), resolve=False)
        value = raw.get("hydra", {}).get(section, {}).get("dir")
    if not isinstance(value, str):
        return
    text = value.strip("'\"")
    path = os.path.dirname(text.split("${", 1)[0]) if "${" in text else text
    path = os.path.expanduser(path).rstrip(os.sep) or path
    while path and not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)  # the nearest existing ancestor must be a directory
    if path and os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError(key, value, "a directory, or a path where one can be created", f"{path} is not a directory")


def _composition_error(exc: BaseException, overrides: Sequence[str]) -> ConfigError:
    error = translate(exc, overrides)
    error.composition = True
    return error


def compose(overrides: Sequence[str], validate: bool = True):
    """The job config for `overrides` (the implied choices added), validated unless told not to;
    no TensorFlow. What tests and tools use; the command line builds its config in `run_single`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from scaleflow.config import store
    from scaleflow.validation import validate as validate_config
    from scaleflow.security import targets

    store.register()
    overrides = with_implied(overrides)  # e.g. strategy=tpu -> hardware=tpu
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            cfg = hydra_compose(CONFIG_NAME, overrides=search_path_override(overrides), return_hydra_config=True)
        except Exception as exc:  # noqa: BLE001 - every composition error becomes a ConfigError
            raise _composition_error(exc, overrides) from None
    # Hydra's part is composed too, only to refuse code a config file would make Hydra run, and to
    # record the command line as a Hydra job would (`current_overrides`).
    targets.check(cfg, targets.command_line_allowed(overrides))
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    if validate:
        validate_config(cfg)
    return cfg


def _parse(overrides: Sequence[str], multirun: bool) -> list:
    """Hydra's parsed overrides, after the target check; a sweep without -m is a config error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from scaleflow.security import targets

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, overrides) from None
    targets.check_overrides(overrides, targets.command_line_allowed(overrides))
    sweeps = [o for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]
    if sweeps and not multirun:
        o = sweeps[0]
        raise ConfigError(o.get_key_element(), o.input_line.split("=", 1)[1], "a single value",
                          "Add -m (--multirun) to sweep over several values")
    return parsed


def check_sweep(overrides: Sequence[str]) -> None:
    """Before a sweep launches: every swept value must compose. Composition errors (unknown keys,
    options, types) would stop Hydra's launcher mid-sweep, so they are reported now; value errors
    (ranges, paths) fail only their own job, which validates its config and is recorded as failed."""
    from omegaconf.errors import OmegaConfBaseException

    parsed = _parse(overrides, multirun=True)
    # Hydra's own keys are composed too (callbacks, launcher, logging: what Hydra instantiates).
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = [o for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]
    if not sweeps:
        compose(fixed, validate=False)
    for o in sweeps:
        if o.value_type is not None and "CHOICE" not in str(o.value_type) and "SIMPLE" not in str(o.value_type):
            continue  # ranges/intervals for sweepers: nothing to enumerate
        for value in o.sweep_string_iterator():
            try:
                compose(fixed + [f"{o.get_key_element()}={value}"], validate=False)
            except OmegaConfBaseException as exc:
                raise translate(exc, overrides) from None


def run_single(args, overrides: Sequence[str]) -> None:
    """One job: compose and validate its config once, then print it (`--cfg`) or run it exactly as
    Hydra's `run` does (run dir, .hydra/, logging, callbacks), with that one config."""
    from hydra import version
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import read_write

    from scaleflow.config import store
    from scaleflow.validation import validate
    from scaleflow.security import targets

    _parse(overrides, multirun=False)
    user_overrides = list(overrides)
    version.setbase("1.3")
    store.register()
    overrides = search_path_override(overrides)
    search_path = create_automatic_config_search_path(None, None, f"pkg://{CONFIG_MODULE}")
    hydra = Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path)
    try:
        cfg = hydra.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.RUN,
                                   with_log_configuration=args.cfg is None)
    except Exception as exc:  # noqa: BLE001 - every composition error becomes a ConfigError
        raise _composition_error(exc, overrides) from None
    # Hydra's part is composed too, only to refuse code a config file would make Hydra run.
    targets.check(cfg, targets.command_line_allowed(user_overrides))
    with read_write(cfg.hydra):
        if cfg.hydra.mode is None:
            cfg.hydra.mode = RunMode.RUN
        # `${now:...}` resolved once, here: the dir that is locked is the dir the job runs in.
        run_dir = os.path.abspath(os.path.expanduser(str(cfg.hydra.run.dir)))
        cfg.hydra.run.dir = run_dir
        cfg.hydra.runtime.output_dir = run_dir
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} and the run dir, while validating
    validate(cfg)
    if args.cfg is not None:
        _print_config(hydra, cfg, args)
        return
    from scaleflow.rundir_lock import acquire, job_rank, quote_override

    rank = job_rank(cfg)  # the configured strategy says which process of its job this is
    if rank is not None:  # this process is the job (not a worker its launcher started): lock its dir first
        from scaleflow.signals import remember_command

        acquire(run_dir, rank)
        remember_command(user_overrides + [f"hydra.run.dir={quote_override(run_dir)}"])  # the resume command
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
    ret = run_job(hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
                  task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                  configure_logging=True)
    callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=ret)
    _ = ret.return_value  # raises the job's exception, as Hydra's run does


def _print_config(hydra, cfg, args) -> None:
    """`--cfg job|hydra|all [--package P] [--resolve]`, printed as Hydra prints it."""
    from omegaconf import Container, OmegaConf

    OmegaConf.set_readonly(cfg.hydra, None)
    out = hydra.get_sanitized_cfg(cfg, args.cfg)
    package = None if args.package == "_global_" else args.package
    if package is not None:
        out = OmegaConf.select(out, package)
        if out is None:
            raise ConfigError("--package", package, "a package of the config")
    if not isinstance(out, Container):
        print(out)
        return
    if package is not None:
        print(f"# @package {package}")
    if args.resolve:
        OmegaConf.resolve(out)
    sys.stdout.write(OmegaConf.to_yaml(out))


# ------------------------------------------------------------------------------------- the task
def task(cfg) -> Any:
    """What Hydra runs for each job: dispatch on `mode`. A single run's config was validated when it
    was built (`run_single`); a sweep job validates its own (`sweep.objective.run_job`)."""
    from hydra.core.hydra_config import HydraConfig

    from scaleflow.modes import run_mode

    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    # Before anything else: Hydra has written .hydra/*.yaml with the command line's secrets in them.
    from scaleflow.security import audit
    from scaleflow.security.redact import protect_hydra_outputs

    protect_hydra_outputs(cfg, hydra_cfg)
    audit.configure(cfg)  # security.audit_log, for this job and the processes it starts
    if hydra_cfg.mode.name == "MULTIRUN":  # returns the objective; a failed job is recorded, not raised
        from scaleflow.sweep.objective import run_job

        share_cores(hydra_cfg.launcher.get("n_jobs"))
        return run_job(cfg, run_dir)
    try:
        if cfg.mode in tf_logging.MODEL_MODES:  # they import TensorFlow in this process: quietly
            tf_logging.import_tensorflow(cfg.trainer.verbose)
        return run_mode(cfg, run_dir)
    except ConfigError as e:
        _fail(e, 2)
    except ScaleflowError as e:
        _fail(e, e.exit_code)


THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def share_cores(n_jobs: Any) -> None:
    """Jobs running side by side (e.g. hydra/launcher=joblib n_jobs=N) each get cores/N TensorFlow
    threads instead of all of them: oversubscribed thread pools make a parallel sweep slower than a
    serial one. Applies before TensorFlow is imported in the job's process; the user's settings win."""
    if "tensorflow" in sys.modules or not isinstance(n_jobs, int) or n_jobs <= 1:
        return
    threads = str(max(1, (os.cpu_count() or 1) // n_jobs))
    for name in THREAD_ENV:
        os.environ.setdefault(name, threads)


HELP_GROUPS = ("model", "data", "strategy", "hardware", "trainer", "export", "profile", "logger", "experiment",
               "hparams_search")


def group_options() -> dict[str, list[str]]:
    """Options of each config group, read from the config packages (scaleflow's and plugins')."""
    import importlib.resources

    from scaleflow import registry

    packages = [CONFIG_MODULE] + [p.removeprefix("pkg://") for p in registry.conf_search_paths()]
    options: dict[str, set[str]] = {g: set() for g in HELP_GROUPS}
    for package in packages:
        root = importlib.resources.files(package)
        for group in HELP_GROUPS:
            directory = root / group
            if directory.is_dir():
                options[group].update(f.name[:-5] for f in directory.iterdir() if f.name.endswith(".yaml"))
    return {g: sorted(o) for g, o in options.items()}


def print_help(overrides: Sequence[str]) -> None:
    """`--help`: groups with their options, the composed config, examples. Hydra's own help walks the
    whole ConfigStore once per group (seconds); this reads the config packages directly."""
    from omegaconf import OmegaConf

    cfg = compose(overrides)
    help_cfg = OmegaConf.load(importlib_file(CONFIG_MODULE, "config.yaml")).hydra.help
    lines = [help_cfg.header.rstrip(), "", "Config groups (choose one option each, e.g. model=cnn):"]
    lines += [f"  {g}: {', '.join(o)}" for g, o in group_options().items() if o]
    lines += ["", "Current config (override any key, e.g. trainer.epochs=3):", "",
              OmegaConf.to_yaml(cfg).rstrip(), "", help_cfg.footer.rstrip()]
    print("\n".join(lines))


def importlib_file(package: str, name: str) -> str:
    import importlib.resources

    return str(importlib.resources.files(package) / name)


def _split_argv(argv: Sequence[str]):
    """(parsed args, flags, overrides). Overrides may stand anywhere (`mode=plan -m a=1,2`), but
    argparse takes one run of positionals only, so Hydra gets flags first, then every override."""
    from hydra._internal.utils import get_args_parser

    parsed, _ = get_args_parser().parse_known_intermixed_args(list(argv))
    overrides = list(parsed.overrides or [])
    flags = list(argv)
    for override in overrides:
        flags.remove(override)
    return parsed, flags, overrides


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    tf_logging.set_default_level()  # TensorFlow's C++ info lines stay hidden unless the user sets a level
    try:
        args, flags, overrides = _split_argv(argv)
        overrides = with_implied(overrides)  # once for the whole command (e.g. strategy=tpu -> hardware=tpu)
        from scaleflow.security import redact

        redact.remember(redact.secrets_of(list(overrides)))  # console lines quoting them, e.g. a sweep's "#0 : ..."
        redact.install()
        if args.help:
            print_help(overrides)
            sys.exit(0)
        informational = args.hydra_help or args.info or args.shell_completion
        if not informational and not args.multirun:
            from hydra._internal.utils import run_and_report

            # One job: its one config build. Hydra's reporting of an unexpected error (short).
            run_and_report(lambda: _run_single_reporting(args, overrides))
            return
        if args.multirun:
            check_sweep(overrides)
            check_output_dir(overrides, multirun=True)  # each job's run dir is checked when it is locked
        overrides = search_path_override(overrides)
    except ConfigError as e:
        _fail(e, 2)
    except SystemExit:
        raise
    except ScaleflowError as e:
        _fail(e, e.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside training (which handles it itself): no traceback
        print("scaleflow: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(130)

    # A sweep, or Hydra's informational flags: Hydra's own main.
    import hydra

    from scaleflow.config import store

    store.register()
    sys.argv = [sys.argv[0] if sys.argv else "scaleflow"] + flags + overrides
    try:
        hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME, version_base="1.3")(task)()
    except KeyboardInterrupt:  # Ctrl-C outside training (which handles it itself): no traceback
        print("scaleflow: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(130)
    from scaleflow.sweep.callback import last_summary

    summary = last_summary()
    if summary and summary["failed"]:  # the sweep went on past failed jobs; the exit status says so
        print(f"scaleflow: error: {len(summary['failed'])} of {summary['jobs']} sweep jobs failed "
              f"(jobs {', '.join(map(str, summary['failed']))}); see {summary['files'].get('md')}", file=sys.stderr)
        sys.exit(1)


def _run_single_reporting(args, overrides: Sequence[str]) -> None:
    try:
        run_single(args, overrides)
    except ConfigError as e:
        _fail(e, 2)
    except ScaleflowError as e:
        _fail(e, e.exit_code)
