"""The KServe model: one model name, all its served versions, predict.

KServe calls `predict` for its own protocol routes (v1 `:predict` and the v2 open inference
protocol, `/v2/models/<name>/infer`); scaleflow's TF Serving routes (versions, labels) call `infer`.
Both go through the same path: pick the version, check the body against its signature, batch,
count classes and drift.

KServe starts extra worker processes by pickling the server, models included: the model pickles
its settings only and loads its versions in the process that serves (`start`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import kserve
import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from scaleflow.serving import metrics
from scaleflow.serving.batcher import Batcher
from scaleflow.serving.drift import DriftMonitor
from scaleflow.serving.repository import NotReady, Repository, Servable
from scaleflow.serving.tfserving import BadRequest, format_predict, json_ready, parse_predict, to_array

log = logging.getLogger("scaleflow.serve")

V2_DATATYPES = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int32": "INT32", "int64": "INT64"}


class ScaleflowModel(kserve.Model):
    """Args:
        settings: `ServeSettings`.

    Example:
        model = ScaleflowModel(settings)
        model.start()                        # in the serving process: load, warm up, watch the dir
        body, servable = await model.infer({"instances": [[...]]}, version=3)
    """

    def __init__(self, settings):
        self.repository: Repository | None = None
        super().__init__(settings.name)
        self.settings = settings
        self.executor: ThreadPoolExecutor | None = None

    def __getstate__(self):  # pickled into spawned workers: settings only, nothing loaded
        state = dict(self.__dict__)
        state.update(repository=None, executor=None)
        return state

    @property
    def ready(self) -> bool:
        """At least one version loaded and warmed up in this process."""
        return self.repository is not None and bool(self.repository.versions)

    @ready.setter
    def ready(self, value: bool) -> None:  # KServe assigns it; readiness follows the repository instead
        pass

    # --------------------------------------------------------------------------- lifecycle
    def load(self) -> bool:
        return self.ready

    def start(self) -> None:  # noqa: D401 - KServe's hook name
        """Load what is served now (warm-up included), then keep watching the directory."""
        if self.repository is not None:
            return
        self.executor = ThreadPoolExecutor(max_workers=self.settings.threads, thread_name_prefix="scaleflow-predict")
        self.repository = Repository(self.settings, on_load=self._attach)
        self.repository.poll()
        self.repository.start()
        if not self.ready:
            log.error("no version of model %s could be served from %s", self.name, self.settings.model_dir)

    def stop(self) -> None:
        if self.repository is not None:
            self.repository.stop()

    def _attach(self, servable: Servable) -> None:
        """Per-process helpers of a newly loaded version: its batcher and drift monitor."""
        labels = metrics.identity_labels(servable)
        histogram = metrics.BATCH_SIZE.labels(**labels)
        stats = servable.metadata.get("feature_stats")
        drift = DriftMonitor(stats, servable.metadata.get("feature_names"), self.settings.drift_window,
                             self.settings.drift_threshold,
                             on_window=lambda scores, drifted: self._drift(servable, scores, drifted)) \
            if stats and stats.get("histograms") else None

        def on_batch(x: np.ndarray, outputs: np.ndarray) -> None:
            histogram.observe(len(x))
            metrics.predicted_classes(servable, outputs)
            if drift is not None:
                drift.observe(x)

        servable.extras["batcher"] = Batcher(servable.predict, self.settings.max_batch_size,
                                             self.settings.batch_timeout_s, self.executor, on_batch,
                                             concurrency=self.settings.threads)

    def _drift(self, servable: Servable, scores: dict, drifted: list) -> None:
        self._report(servable, scores, drifted)
        labels = metrics.identity_labels(servable)
        for feature, value in scores.items():
            metrics.DRIFT.labels(**labels, feature=feature).set(value)
        metrics.DRIFT_WINDOWS.labels(**labels, drifted=str(bool(drifted)).lower()).inc()
        if drifted:  # once per window; names and scores only, never request values
            worst = sorted(drifted, key=lambda f: -scores[f])
            log.warning("input drift on %s over the last %d rows: %s (PSI > serve.drift_threshold=%g)",
                        servable.ref, self.settings.drift_window,
                        ", ".join(f"{f}={scores[f]:.3f}" for f in worst[:10]) + (" ..." if len(worst) > 10 else ""),
                        self.settings.drift_threshold)

    def _report(self, servable: Servable, scores: dict, drifted: list) -> None:
        """`<model_dir>/serving.json`, which `mode=models` shows: per version, the drift windows seen
        and whether drift was reported. Best effort (a read-only model dir just gets no report)."""
        from scaleflow.manifest import atomic_write_json, now

        path = os.path.join(self.settings.model_dir, "serving.json")
        try:
            with open(path) as f:
                report = json.load(f)
            if not isinstance(report.get("versions"), dict):
                raise ValueError
        except (OSError, ValueError, AttributeError):
            report = {"versions": {}}
        entry = report["versions"].get(str(servable.version)) or {}
        entry = {"model": servable.ref, "drift_windows": int(entry.get("drift_windows", 0)) + 1,
                 "drifted_windows": int(entry.get("drifted_windows", 0)) + bool(drifted),
                 "drift_reported": bool(entry.get("drift_reported")) or bool(drifted),
                 "last_window": {"rows": self.settings.drift_window, "psi": scores, "drifted": drifted},
                 "threshold": self.settings.drift_threshold, "updated": now()}
        report["versions"][str(servable.version)] = entry
        try:
            atomic_write_json(path, report)
        except OSError as e:
            log.debug("no serving report in %s: %s", path, e)

    # ----------------------------------------------------------------------------- predict
    def servable(self, version: int | None = None, label: str | None = None) -> Servable:
        if self.repository is None or not self.repository.polls:
            raise NotReady(f"model {self.name} is still loading and warming up")
        return self.repository.get(version, label)

    async def run(self, servable: Servable, x: np.ndarray) -> np.ndarray:
        metrics.note(labels=metrics.identity_labels(servable))
        return await servable.extras["batcher"](x)

    async def infer(self, payload: dict, version: int | None = None, label: str | None = None) -> tuple[dict, Servable]:
        """A TF Serving predict body in, its response body and the version that answered out."""
        servable = self.servable(version, label)
        x, columnar = parse_predict(payload, servable)
        return format_predict(await self.run(servable, x), columnar), servable

    async def predict(self, payload, headers=None, response_headers=None):
        """KServe's hook: a v1 body (dict) or a v2 `InferRequest`, for the latest version."""
        if not isinstance(payload, InferRequest):
            body, _ = await self.infer(payload)
            return body
        version = int(payload.model_version) if str(payload.model_version or "").isdigit() else None
        servable = self.servable(version)
        if len(payload.inputs) != 1:
            raise BadRequest(f"expected one input tensor ({servable.input_name}), got {len(payload.inputs)}")
        x = to_array("inputs", payload.inputs[0].as_numpy().tolist(), servable)
        outputs = await self.run(servable, x)
        if not isinstance(outputs, dict):
            outputs = {"output_0": outputs}
        infer_outputs = []
        for name, value in outputs.items():
            value = np.asarray(value)
            text = value.dtype.kind in "OSU"
            data = json_ready(value) if text else value.flatten().tolist()
            infer_outputs.append(InferOutput(name=name, shape=list(value.shape),
                                             datatype="BYTES" if text else V2_DATATYPES.get(str(value.dtype), "FP32"),
                                             data=list(np.ravel(np.asarray(data, dtype=object))) if text else data))
        return InferResponse(response_id=payload.id or "", model_name=self.name, model_version=str(servable.version),
                             infer_outputs=infer_outputs)


def mark_ready(state_dir: str) -> None:
    """Tell the other workers this process is ready (the server is ready when all are)."""
    if state_dir:
        open(os.path.join(state_dir, f"ready-{os.getpid()}"), "w").close()


def workers_ready(state_dir: str, workers: int) -> bool:
    if not state_dir or workers <= 1:
        return True
    try:
        return sum(1 for f in os.listdir(state_dir) if f.startswith("ready-")) >= workers
    except OSError:
        return False


def start_in_background(model: ScaleflowModel, state_dir: str) -> threading.Thread:
    """Load and warm up without blocking the server: liveness answers at once, readiness after."""
    def run():
        model.start()
        if model.ready:
            mark_ready(state_dir)

    thread = threading.Thread(target=run, name="scaleflow-model-start", daemon=True)
    thread.start()
    return thread
