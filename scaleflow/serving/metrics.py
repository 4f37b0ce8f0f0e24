"""Prometheus metrics of `mode=serve`, labelled with the model identity (name, version, export checksum).

    scaleflow_serve_requests_total{model,version,checksum,code}        requests by HTTP status code
    scaleflow_serve_request_latency_seconds{model,version,checksum}    histogram, whole request
    scaleflow_serve_batch_size{model,version,checksum}                 histogram, rows per model call
    scaleflow_serve_predicted_class_total{model,version,checksum,class_name}   predicted classes
    scaleflow_serve_feature_drift_psi{model,version,checksum,feature}  PSI of the last drift window
    scaleflow_serve_drift_windows_total{model,version,checksum,drifted}  windows closed, with/without drift

With several workers, each process writes its samples to `PROMETHEUS_MULTIPROC_DIR` and `/metrics`
adds them up (`render`), as prometheus-client's multiprocess mode prescribes.
"""

from __future__ import annotations

import contextvars
import os
from collections import Counter as Tally

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, \
    generate_latest

IDENTITY = ("model", "version", "checksum")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

REQUESTS = Counter("scaleflow_serve_requests", "Model requests by HTTP status code", IDENTITY + ("code",))
LATENCY = Histogram("scaleflow_serve_request_latency_seconds", "Model request latency (whole request)",
                    IDENTITY, buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram("scaleflow_serve_batch_size", "Rows per model call (after dynamic batching)",
                       IDENTITY, buckets=BATCH_BUCKETS)
PREDICTED_CLASS = Counter("scaleflow_serve_predicted_class", "Predicted classes (argmax)", IDENTITY + ("class_name",))
DRIFT = Gauge("scaleflow_serve_feature_drift_psi", "Input drift per feature: PSI of the last window vs training",
              IDENTITY + ("feature",), multiprocess_mode="mostrecent")
DRIFT_WINDOWS = Counter("scaleflow_serve_drift_windows", "Drift windows closed", IDENTITY + ("drifted",))


# The current HTTP request's record, filled by whatever resolves its model version: {"labels": {...}}.
# The request middleware reads it to count the request under that version's identity.
REQUEST_INFO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("scaleflow_request", default=None)


def note(**fields) -> None:
    info = REQUEST_INFO.get()
    if info is not None:
        info.update(fields)


def identity_labels(servable) -> dict:
    return {"model": str(servable.identity.get("name") or ""), "version": str(servable.version),
            "checksum": servable.checksum_short}


def unknown_labels(name: str = "") -> dict:
    """For requests that never reached a version (unknown model, bad version, 413)."""
    return {"model": name, "version": "", "checksum": ""}


def record_request(labels: dict, code: int, seconds: float | None) -> None:
    REQUESTS.labels(**labels, code=str(code)).inc()
    if seconds is not None:
        LATENCY.labels(**labels).observe(seconds)


def predicted_classes(servable, outputs) -> None:
    """Count the predicted class of every row (classification and binary tasks only): the model's own
    `class_name` output when its signature has one, else the argmax of its scores."""
    task = servable.metadata.get("task", "classification")
    if isinstance(outputs, dict) and "class_name" in outputs:
        labels = identity_labels(servable)
        names = Tally(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                        for v in np.asarray(outputs["class_name"]).ravel())
        for name, count in names.items():
            PREDICTED_CLASS.labels(**labels, class_name=name).inc(count)
        return
    if isinstance(outputs, dict):
        outputs = outputs.get("scores", next(iter(outputs.values())))
    outputs = np.asarray(outputs)
    if task not in ("classification", "binary") or outputs.ndim != 2 or not len(outputs):
        return
    if outputs.shape[1] == 1:
        indices = (outputs[:, 0] > (0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0)).astype(int)
    else:
        indices = outputs.argmax(axis=1)
    names = servable.metadata.get("class_names") or []
    labels = identity_labels(servable)
    for index, count in zip(*np.unique(indices, return_counts=True)):
        name = str(names[index]) if index < len(names) else str(int(index))
        PREDICTED_CLASS.labels(**labels, class_name=name).inc(int(count))


def render() -> tuple[bytes, str]:
    """The exposition text: this process's registry, or all workers' when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
