"""Where the config tree lives, and what the command line of the running job said.

A leaf module: the CLI, the run-dir lock and the modes read these without importing the CLI.
"""

from __future__ import annotations

CONFIG_MODULE = "scaleflow.conf"  # conf/ ships inside the wheel as this package
CONFIG_NAME = "config"
TASK_NAME = "cli"  # Hydra's job name (the log file is <run dir>/cli.log), as hydra.main named it
# Worker processes that get the resolved config instead of a command line (e.g. Horovod ranks) learn
# the launching command's overrides from this variable.
OVERRIDES_ENV = "SCALEFLOW_OVERRIDES"


def current_overrides() -> list[str]:
    """The command line's overrides of the job being run (e.g. to tell whether the user chose
    `data=` or left evaluate/predict on the trained run's data): Hydra's record of them, else what
    the launching process handed down in OVERRIDES_ENV."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    import json
    import os

    return list(json.loads(os.environ.get(OVERRIDES_ENV, "[]")))
