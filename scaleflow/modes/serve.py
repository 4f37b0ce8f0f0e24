"""mode=serve: serve every version of an export on KServe's model server, TF Serving's REST API.

    python -m scaleflow mode=serve serve.model_dir=outputs/<run>/export/mlp
    python -m scaleflow mode=serve serve.run=outputs/<run>                 # the model its run.json exported
    curl -d '{"instances": [[...]]}' http://127.0.0.1:8501/v1/models/mlp:predict

Before anything heavy is imported, the model dir must hold at least one version that passes
`verify_export`; otherwise this is a config error (exit 2) naming the path and each version's problem.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from scaleflow.errors import ConfigError

log = logging.getLogger("scaleflow")


def model_dir(cfg) -> tuple[str, str]:
    """(config key, model dir) from `serve.model_dir`, or the run.json of `serve.run` (or of the
    top-level `run=`, as mode=deploy and mode=evaluate take it)."""
    serve = cfg.serve
    run, run_key = (serve.run, "serve.run") if serve.run else (cfg.get("run"), "run")
    if serve.model_dir and run:
        raise ConfigError(run_key, run, "unset when serve.model_dir is set", "Give one of the two")
    if serve.model_dir:
        return "serve.model_dir", os.path.expanduser(str(serve.model_dir))
    if not run:
        raise ConfigError("serve.model_dir", None, "the directory <export.dir>/<export.name> holding version dirs",
                          "Set serve.model_dir=... or serve.run=<run dir>")
    run_json = os.path.join(os.path.expanduser(str(run)), "run.json")
    try:
        with open(run_json) as f:
            export = json.load(f).get("export") or {}
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(run_key, run, "a run dir with a readable run.json",
                          f"{run_json}: {getattr(e, 'strerror', None) or e}") from None
    version_dir = export.get("dir") or export.get("path")
    if not version_dir:
        raise ConfigError(run_key, run, "a run that exported a model",
                          f"{run_json} has no export path (export=none, or the run did not finish)")
    return run_key, os.path.dirname(os.path.normpath(version_dir))


def check_model_dir(key: str, directory: str) -> list[int]:
    """The verified versions in `directory`; ConfigError (exit 2) naming it when there are none."""
    from scaleflow.serving.repository import served_versions

    if not os.path.isdir(directory):
        raise ConfigError(key, directory, "an existing directory <export.dir>/<export.name> holding version dirs",
                          "Nothing is there")
    verified, refused = served_versions(directory)
    if not verified:
        why = "; ".join(f"version {v}: {reason}" for v, reason in sorted(refused.items())) or \
            "no version directories (1/, 2/, ...)"
        raise ConfigError(key, directory, "a directory holding at least one verified export version", why)
    for version, reason in sorted(refused.items()):
        log.warning("version %d of %s will not be served: %s", version, directory, reason)
    return verified


def check(cfg) -> tuple[str, list[int]]:
    """Config validation of mode=serve (before Hydra runs the job): (model dir, verified versions)."""
    key, directory = model_dir(cfg)
    if cfg.serve.get("auth_token_file"):
        from scaleflow.security.auth import TokenFile

        TokenFile(os.path.expanduser(str(cfg.serve.auth_token_file)))  # a bad file: exit 2 naming the line
    return directory, check_model_dir(key, directory)


def run(cfg, run_dir: str) -> None:
    directory, verified = check(cfg)
    missing = sorted(set(cfg.serve.versions) - set(verified))
    if missing:
        log.warning("serve.versions %s: not verified in %s (yet); served once they appear", missing, directory)

    from scaleflow.serving.app import serve
    from scaleflow.serving.settings import ServeSettings

    from scaleflow.security import audit

    settings = ServeSettings.from_config(cfg.serve, directory)
    audit.record("server_start", address=f"http://{settings.host}:{settings.port}", model_dir=directory,
                 versions=verified, auth="bearer tokens" if settings.auth_token_file else "none",
                 workers=settings.workers)
    serve(settings)
    audit.record("server_stop", address=f"http://{settings.host}:{settings.port}", model_dir=directory)
    # The server has stopped cleanly and nothing is left to do: skip the interpreter's teardown of
    # TensorFlow's objects, which takes seconds and would delay the exit a supervisor waits for.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
