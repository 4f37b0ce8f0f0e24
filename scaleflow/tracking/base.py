"""The logger extension point: mirror a run's record (run.json) into an experiment tracker.

A logger never sees Keras: it follows the run's `Manifest`, which already holds everything a tracker
wants (the resolved config, per-epoch metrics, throughput, the export and its identity). Only the
chief process logs. Sweeps get `sweep_start`/`sweep_end` from the multirun callback, so each job's
run can hang under one parent.

Example:

    class PrintLogger(Logger):
        name = "print"

        def start(self, cfg, run_dir, manifest):
            print("run", run_dir)

        def update(self, data, changed):
            if "metrics" in changed:
                print(data["metrics"]["final"])

        def finish(self, data):
            print(data["status"])

    # pyproject.toml:  [project.entry-points."scaleflow.loggers"]  print = "pkg.mod:PrintLogger"
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from scaleflow.config.schema import LoggerConfig


class Logger:
    """Base class of every logger (`logger=<name>`); every hook is optional."""

    name: ClassVar[str]
    Config: ClassVar[type] = LoggerConfig
    conf: ClassVar[Optional[str]] = None  # `pkg://...` search path of a plugin's config files

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Cross-field rules of this logger, before TensorFlow is imported: raise ConfigError."""

    def start(self, cfg: Any, run_dir: str, manifest: Any) -> None:
        """Called once, before training, in the chief. Args: the config, the run dir, the Manifest
        (its `data` is run.json as it stands; `previous` an interrupted attempt's run.json)."""

    def update(self, data: dict, changed: tuple[str, ...]) -> None:
        """Called after every change of run.json. Args: the whole record, the keys that changed."""

    def finish(self, data: dict) -> None:
        """Called once when the run ends (status ok, failed or interrupted). Args: the final record."""

    def sweep_start(self, config: Any) -> None:
        """Called in the launching process before the jobs of a multirun start."""

    def sweep_end(self, config: Any, summary: dict) -> None:
        """Called after the last job of a multirun, with the sweep summary."""


class NoLogger(Logger):
    """`logger=none`: run.json and TensorBoard only."""

    name = "none"


def follow_with_logger(cfg: Any, run_dir: str, manifest: Any) -> None:
    """Start the configured logger and let it follow the run's manifest (chief only)."""
    from scaleflow import registry

    name = cfg.get("logger", {}).get("name", "none")
    if name == NoLogger.name:
        return
    logger = registry.get("logger", name)()
    logger.start(cfg, run_dir, manifest)
    manifest.follow(logger)
