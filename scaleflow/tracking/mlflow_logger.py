"""`logger=mlflow`: the run in MLflow, the tracker most teams already run.

What is logged (chief only): params (the flattened resolved config), every epoch's metrics (step =
epoch, so a resumed run continues the same curves), throughput, run.json and the TensorBoard
directory as artifacts, and the verified export as a model version registered under `export.name`
and tagged with the model identity (config hash, data fingerprint, export checksum). The MLflow run
id is kept in `<run dir>/mlflow.json`: a resumed run continues the same MLflow run. In a multirun
each job's run is a child of one parent run for the sweep.

Default store: `sqlite:///<working dir>/mlflow.db`, artifacts in `<working dir>/mlartifacts`;
`logger.tracking_uri` points anywhere MLflow can (a server, another database).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

from scaleflow.config.schema import LoggerConfig
from scaleflow.model_registry import flatten
from scaleflow.tracking.base import Logger

log = logging.getLogger("scaleflow")

RUN_FILE = "mlflow.json"
PARENT_ENV = "SCALEFLOW_MLFLOW_PARENT_RUN"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


@dataclass
class MLflowConfig(LoggerConfig):
    register_model: bool = True  # the export becomes a version of the registered model `export.name`
    log_artifacts: bool = True  # run.json, TensorBoard logs and the export files
    run_name: Optional[str] = None  # None: the run dir's name


def tracking_uri(configured: Optional[str]) -> str:
    return configured or "sqlite:///" + os.path.abspath("mlflow.db")


def _client(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in whatever dir runs it
        location = "file://" + os.path.join(os.path.dirname(uri.removeprefix("sqlite:///")), "mlartifacts")
    return client.create_experiment(name, artifact_location=location)


class MLflow(Logger):
    name = "mlflow"
    Config = MLflowConfig

    def start(self, cfg, run_dir, manifest) -> None:
        options = cfg.logger
        self.options, self.run_dir = options, run_dir
        self.uri = tracking_uri(options.tracking_uri)
        self.client = _client(self.uri)
        self.logged_epochs = 0
        run_id = self._previous_run(run_dir)
        if run_id is None:
            tags = {"scaleflow.run_dir": os.path.abspath(run_dir), "scaleflow.config_hash": manifest.config_hash}
            parent = os.environ.get(PARENT_ENV)
            if parent:
                tags["mlflow.parentRunId"] = parent
            run = self.client.create_run(_experiment_id(self.client, options.experiment, self.uri),
                                         run_name=options.run_name or os.path.basename(os.path.abspath(run_dir)),
                                         tags=tags)
            run_id = run.info.run_id
            self._log_params(manifest.data["config"], run_id)
            from scaleflow.manifest import atomic_write_json

            atomic_write_json(os.path.join(run_dir, RUN_FILE), {"run_id": run_id, "tracking_uri": self.uri})
        else:
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, "loss")
            self.logged_epochs = max((m.step for m in history), default=-1) + 1
        self.run_id = run_id
        log.info("mlflow: run %s in %s (experiment %s)", run_id, self.uri, options.experiment)

    def _previous_run(self, run_dir: str) -> Optional[str]:
        """The MLflow run an interrupted attempt in this run dir started, if the store still has it."""
        try:
            with open(os.path.join(run_dir, RUN_FILE)) as f:
                run_id = json.load(f)["run_id"]
            self.client.get_run(run_id)
            return run_id
        except Exception:  # noqa: BLE001 - no file, another store, deleted run: start a new one
            return None

    def _log_params(self, config: dict, run_id: str) -> None:
        from mlflow.entities import Param

        from scaleflow.security.redact import scrub  # a tracker is an artifact too: secrets as ***

        params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(flatten(scrub(config)).items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=params[i:i + 100])

    def update(self, data, changed) -> None:
        if "metrics" not in changed or not data.get("metrics"):
            return
        from mlflow.entities import Metric

        history = data["metrics"].get("history") or {}
        epochs = max((len(v) for v in history.values()), default=0)
        if epochs <= self.logged_epochs:
            return
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(values[epoch]), now, epoch) for key, values in history.items()
                   for epoch in range(self.logged_epochs, len(values)) if values[epoch] is not None]
        self.client.log_batch(self.run_id, metrics=metrics)
        self.logged_epochs = epochs

    def finish(self, data) -> None:
        from mlflow.entities import Metric

        throughput = data.get("throughput") or {}
        extra = [Metric(f"throughput_{k}", float(throughput[k]), 0, 0)
                 for k in ("examples_per_sec", "steps_per_sec") if isinstance(throughput.get(k), (int, float))]
        if extra:
            self.client.log_batch(self.run_id, metrics=extra)
        export = data.get("export") or {}
        if self.options.log_artifacts:
            self.client.log_artifact(self.run_id, os.path.join(self.run_dir, "run.json"))
            tensorboard = os.path.join(self.run_dir, "tensorboard")
            if os.path.isdir(tensorboard):
                self.client.log_artifacts(self.run_id, tensorboard, "tensorboard")
            if export.get("dir"):
                self.client.log_artifacts(self.run_id, export["dir"], "export")
        if self.options.register_model and data.get("status") == "ok" and export.get("dir"):
            self._register(data, export)
        status = {"ok": "FINISHED", "interrupted": "KILLED"}.get(data.get("status"), "FAILED")
        self.client.set_terminated(self.run_id, status=status)

    def _register(self, data: dict, export: dict) -> None:
        from mlflow.exceptions import MlflowException

        identity = data.get("model") or {}
        name = identity.get("name")
        try:
            self.client.create_registered_model(name)
        except MlflowException:
            pass  # already registered: add a version
        run = self.client.get_run(self.run_id)
        source = run.info.artifact_uri + "/export" if self.options.log_artifacts else export["dir"]
        tags = {f"scaleflow.{k}": str(v) for k, v in identity.items() if v is not None}
        version = self.client.create_model_version(name, source, run_id=self.run_id, tags=tags)
        log.info("mlflow: registered %s version %s (export version %s)", name, version.version,
                 identity.get("version"))

    # ------------------------------------------------------------------------------ sweeps
    def sweep_start(self, config) -> None:
        options = config.logger
        uri = tracking_uri(options.tracking_uri)
        client = _client(uri)
        parent = client.create_run(_experiment_id(client, options.experiment, uri),
                                   run_name=f"sweep {os.path.basename(str(config.hydra.sweep.dir))}",
                                   tags={"scaleflow.sweep_dir": os.path.abspath(str(config.hydra.sweep.dir))})
        os.environ[PARENT_ENV] = parent.info.run_id  # inherited by every job process the launcher starts
        self.parent = (client, parent.info.run_id)

    def sweep_end(self, config, summary) -> None:
        client, run_id = getattr(self, "parent", (None, None))
        if client is None:
            return
        failed = summary.get("failed") if summary else None
        client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        os.environ.pop(PARENT_ENV, None)
