"""What `mode=` runs. Only modes that run a model (train, evaluate, predict) import TensorFlow."""

from __future__ import annotations

import importlib
from typing import Any, Callable

# mode -> "module:function"; each function takes (cfg, run_dir) and returns the job's result.
MODES: dict[str, str] = {
    "train": "scaleflow.modes.train:run",
    "plugins": "scaleflow.modes.plugins:run",
    "plan": "scaleflow.modes.plan:run",
    "calibrate": "scaleflow.modes.calibrate:run",
    "shards": "scaleflow.modes.shards:run",
    "index": "scaleflow.modes.index:run",
    "models": "scaleflow.modes.models:run",
    "explain": "scaleflow.modes.explain:run",
    "evaluate": "scaleflow.modes.evaluate:run",
    "predict": "scaleflow.modes.predict:run",
    "verify": "scaleflow.modes.verify:run",
    "audit": "scaleflow.modes.audit:run",
    "deploy": "scaleflow.modes.deploy:run",
    "serve": "scaleflow.modes.serve:run",
}


def run_mode(cfg, run_dir: str) -> Any:
    module, _, function = MODES[cfg.mode].partition(":")
    runner: Callable[[Any, str], Any] = getattr(importlib.import_module(module), function)
    return runner(cfg, run_dir)
