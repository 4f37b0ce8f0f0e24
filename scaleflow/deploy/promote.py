"""Automated deployment: does a finished run's export become `stable`, or stay `canary`?

`export.promote` (default `if_better`):
    if_better  the new, verified export becomes `stable` only when it beats the current stable export on
               `sweep.objective` (direction `sweep.direction`), both evaluated here, in-process, on this
               run's validation records; the stable one must have been trained on data with the same
               fingerprint, else the comparison would be meaningless and the new export stays `canary`
               (the reason says so). With no stable version yet, the first verified export becomes it.
    always     the new verified export becomes `stable` (the old one stays reachable by rollback).
    never      no label is written.

In a multirun the jobs do not promote themselves (they would race and the last would win): each job
records `deferred`, and the sweep summary applies the policy to the sweep's best job only
(`promote_run`). The decision goes to run.json as `export.promotion`; the label move, with its reason,
to labels.json's history. Why `if_better` by default: a shared `export.dir` then always has a `stable`
version that no later, worse run displaces, and every run says what became of its model.

The objective is computed from each export's predictions with the run's task's own Keras loss and
metrics (loss / val_loss, and val_<metric> for the metrics the task reports); another objective leaves
the export `canary`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable

import numpy as np

from scaleflow.deploy import labels
from scaleflow.errors import ScaleflowError
from scaleflow.export import integrity

log = logging.getLogger("scaleflow")

def objective_value(cfg, objective: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """`objective` (val_loss, val_<metric>, loss, <metric>) of model `outputs` against targets `y`,
    computed as the run's task computes it in training (its Keras loss and metric objects); NaN when
    the task reports no such metric."""
    import keras

    from scaleflow import tasks
    from scaleflow.models.base import InputSpec

    task = tasks.get(cfg)
    name = objective.removeprefix("val_")
    outputs = np.asarray(outputs, dtype=np.float32)
    if not len(outputs) or len(outputs) != len(y):
        return math.nan
    if name == "loss":
        loss = keras.losses.get(task.loss_name(cfg.trainer))
        return float(np.mean(np.asarray(loss(np.asarray(y), outputs))))
    if name not in task.metric_names(cfg.trainer):
        return math.nan
    spec = InputSpec(tuple(outputs.shape[1:]), int(outputs.shape[-1]), task=task.name)
    metric = task.metric(name, spec)
    metric.update_state(np.asarray(y), outputs)
    return float(np.asarray(metric.result()))


def evaluate(cfg, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, objective: str,
             batch: int = 256) -> float:
    outputs = np.concatenate([np.asarray(predict(x[i:i + batch])) for i in range(0, len(x), batch)])
    return objective_value(cfg, objective, outputs, y)


def loader(directory: str, request) -> Callable[[np.ndarray], np.ndarray]:
    """`predict` for an export version dir, through the exporter that wrote it (its `format`), with
    that export's own metadata (class names its reload is checked against)."""
    import dataclasses

    from scaleflow import registry

    sealed = integrity.read_manifest(directory)
    own = dataclasses.replace(request, metadata=sealed.get("metadata") or {})
    return registry.get("exporter", sealed.get("format") or "saved_model")().load(directory, own)


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    except Exception:  # noqa: BLE001 - outside Hydra (tests, library use): a single run
        return False


def promote_after_training(cfg, exported: dict, request) -> dict:
    """Called by training after a successful export; returns run.json's `export.promotion`."""
    policy = cfg.export.get("promote", "never")
    if policy == "never":
        return {"policy": policy, "decision": "none", "reason": "export.promote=never"}
    if in_multirun():
        return {"policy": policy, "decision": "deferred",
                "reason": "multirun: the sweep summary promotes the sweep's best job only"}
    try:
        return decide(cfg, exported["dir"], int(exported["version"]), request, verified=bool(exported.get("verified")))
    except (ScaleflowError, OSError, ValueError) as e:  # the model is exported; a label problem must not undo it
        log.error("promotion failed, no label moved: %s: %s", type(e).__name__, e)
        return {"policy": policy, "decision": "error", "version": exported.get("version"),
                "reason": f"{type(e).__name__}: {e}"}


def decide(cfg, version_dir: str, version: int, request, *, verified: bool = True, policy: str | None = None) -> dict:
    """Apply `export.promote` to export `version` (at `version_dir`), moving labels; returns the record."""
    policy = policy or cfg.export.get("promote", "if_better")
    root = os.path.dirname(os.path.abspath(version_dir))
    objective, direction = cfg.sweep.objective, cfg.sweep.direction
    out: dict[str, Any] = {"policy": policy, "version": version, "objective": objective, "direction": direction}
    if not verified:
        return {**out, "decision": "none", "reason": "the export was not verified (export.verify=false): never labelled"}
    with labels.editing(root) as state:
        previous = state["stable"]
        out["previous_stable"] = previous
        decision, reason = _judge(policy, root, previous, version_dir, request, objective, direction, out)
        if decision == "stable":
            labels.record(state, "stable", version, action="promote", reason=reason)
            if state["canary"] == version:
                labels.record(state, "canary", None, action="promote", reason=f"{version} became stable")
        else:
            labels.record(state, "canary", version, action="canary", reason=reason)
        out["labels"] = {label: state[label] for label in labels.LABELS}
    out.update(decision=decision, reason=reason)
    log.info("promotion (export.promote=%s): version %d is %s: %s", policy, version, decision, reason)
    return out


def is_better(a: float, b: float, direction: str) -> bool:
    """Whether objective value `a` beats `b` under `sweep.direction` (minimize or maximize)."""
    return a > b if direction == "maximize" else a < b


def _judge(policy, root, previous, version_dir, request, objective, direction, out) -> tuple[str, str]:
    if policy == "always":
        return "stable", "export.promote=always"
    if previous is None:
        return "stable", "no stable version yet"
    stable_dir = os.path.join(root, str(previous))
    check = integrity.verify_export(stable_dir)
    if not check.ok:
        return "stable", f"the current stable version {previous} is unusable ({check.reason})"
    theirs = (check.manifest.get("identity") or {}).get("data_fingerprint")
    ours = (request.identity or {}).get("data_fingerprint")
    if theirs != ours:
        return "canary", (f"not compared: stable version {previous} was trained on other data "
                          f"(data fingerprint {theirs} vs {ours})")
    if request.validation is None:
        return "canary", "not compared: this run has no validation records (data.validation_split=0)"
    x, y = request.validation
    new_value = evaluate(request.cfg, loader(version_dir, request), x, y, objective)
    old_value = evaluate(request.cfg, loader(stable_dir, request), x, y, objective)
    out.update(value=new_value, stable_value=old_value, records=int(len(x)))
    if math.isnan(new_value) or math.isnan(old_value):
        return "canary", (f"not compared: sweep.objective={objective} is not the loss or a metric this "
                          "run's task reports (e.g. val_loss, val_accuracy)")
    if is_better(new_value, old_value, direction):
        return "stable", (f"{objective} {new_value:.6g} beats stable version {previous}'s {old_value:.6g} "
                          f"({direction}) on {len(x)} validation records")
    return "canary", (f"{objective} {new_value:.6g} does not beat stable version {previous}'s {old_value:.6g} "
                      f"({direction}) on {len(x)} validation records")


# ------------------------------------------------------------------------------ after a sweep
def promote_run(run_dir: str) -> dict | None:
    """Apply a finished run's `export.promote` to its export, evaluating on validation records rebuilt
    from its own config (used by the sweep summary for the best job). Updates the run's run.json;
    returns the promotion record, or None when the run has no export to promote."""
    from omegaconf import OmegaConf

    from scaleflow import tasks
    from scaleflow.data.input import validation_records
    from scaleflow.data.planning import plan_input
    from scaleflow.export.base import ExportRequest
    from scaleflow.manifest import Manifest, atomic_write_json

    manifest = Manifest.load(run_dir) or {}
    exported = manifest.get("export") or {}
    if manifest.get("status") != "ok" or not exported.get("dir") or exported.get("version") is None:
        return None
    cfg = OmegaConf.create(manifest["config"])
    policy = cfg.export.get("promote", "never")
    if policy == "never":
        return None
    dataset = tasks.dataset_for(cfg)
    info = dataset.describe(cfg.data)
    plan = plan_input(dataset, cfg.data, info, 1)
    request = ExportRequest(model=None, cfg=cfg, run_dir=run_dir, sample=np.zeros((0,), np.float32),
                            identity={"data_fingerprint": info.fingerprint},
                            validation=validation_records(dataset, cfg.data, plan, info.input_shape))
    record = decide(cfg, exported["dir"], int(exported["version"]), request,
                    verified=bool(exported.get("verified")), policy=policy)
    record["by"] = "sweep summary (best job)"
    manifest["export"] = {**exported, "promotion": record}
    atomic_write_json(os.path.join(run_dir, "run.json"), manifest)
    return record
