"""What a Kubernetes cluster needs to serve a model's exports: KServe or the official TF Serving image.

Both targets serve `<export.dir>/<export.name>/` as it is on disk (TensorFlow Serving's layout: one
numbered directory per version) with a `models.config` that TF Serving reads instead of its default
"latest version only" policy: it loads every labelled version and maps `stable`/`canary` to them, so
clients choose with `/v1/models/<name>/labels/stable:predict` (or `.../versions/<v>:predict`), and a
promotion or rollback is a change of `models.config` (TF Serving polls it), not a new image.

    kserve      inferenceservice.yaml: an InferenceService (serving.kserve.io/v1beta1) whose predictor is
                the `tensorflow` model format at `deploy.storage_uri` (upload `<name>/` there, with
                models.config inside it), started with `--model_config_file=/mnt/models/models.config`.
    tfserving   tfserving.yaml: ConfigMap (models.config) + Deployment of `deploy.image` mounting the
                model volume `deploy.volume_claim` read-only + Service (gRPC 8500, REST 8501) +
                HorizontalPodAutoscaler (autoscaling/v2, CPU utilisation).

Every object is validated before it is written: Kubernetes objects through the `kubernetes` client's
pydantic models (strict types, required fields, no unknown keys), the InferenceService through KServe's
own generated models (the same walk, with their `openapi_types`), models.config by building it as text
a TF Serving `ModelServerConfig` parses. No cluster and no network are needed.
"""

from __future__ import annotations

import re
from typing import Any

TF_SERVING_GRPC_PORT = 8500
TF_SERVING_REST_PORT = 8501
KSERVE_MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri's contents
TFSERVING_MODEL_ROOT = "/models"


class ManifestError(ValueError):
    """A manifest does not match its schema: names the object, the field path and the problem."""


def dns_name(name: str) -> str:
    """A Kubernetes object name (DNS-1123 label) for `name`: lower case, [a-z0-9-], <= 63 chars."""
    out = re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-")[:63].strip("-")
    return out or "model"


# ------------------------------------------------------------------------------ models.config
def model_config_text(name: str, base_path: str, versions: list[int], labels: dict[str, int]) -> str:
    """TF Serving's `ModelServerConfig` (text format): serve exactly `versions`, with version labels."""
    versions = sorted(set(int(v) for v in versions) | set(labels.values()))
    lines = ["# Written by scaleflow mode=deploy. TF Serving re-reads it every",
             "# --model_config_file_poll_wait_seconds: move labels here to promote or roll back.",
             "model_config_list {", "  config {", f"    name: {_quote(name)}", f"    base_path: {_quote(base_path)}",
              "    model_platform: \"tensorflow\"", "    model_version_policy {", "      specific {"]
    lines += [f"        versions: {v}" for v in versions]
    lines += ["      }", "    }"]
    for label in sorted(labels):
        lines += ["    version_labels {", f"      key: {_quote(label)}", f"      value: {int(labels[label])}", "    }"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------------------ objects
def _labels(name: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "scaleflow"}


def _annotations(model: dict) -> dict:
    """The model identity and labels, for whoever reads the object in the cluster."""
    notes = {"scaleflow.io/export-name": str(model["export_name"]),
             "scaleflow.io/versions": ",".join(map(str, model["versions"]))}
    for label, version in sorted(model["labels"].items()):
        notes[f"scaleflow.io/{label}-version"] = str(version)
    checksum = (model.get("identity") or {}).get("export_checksum")
    if checksum:
        notes["scaleflow.io/export-checksum"] = str(checksum)
    return notes


def inference_service(model: dict, deploy) -> dict:
    """A KServe InferenceService for the model (a `tensorflow` predictor on `storage_uri`)."""
    name = model["k8s_name"]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": deploy.namespace, "labels": _labels(name),
                     "annotations": _annotations(model)},
        "spec": {"predictor": {
            "minReplicas": int(deploy.min_replicas),
            "maxReplicas": int(deploy.max_replicas),
            "model": {
                "modelFormat": {"name": "tensorflow"},
                "storageUri": model["storage_uri"],
                # TF Serving ignores --model_name/--model_base_path given a config file: it serves
                # the labelled versions listed in models.config (uploaded beside the versions).
                "args": [f"--model_config_file={KSERVE_MODEL_DIR}/models.config",
                         "--model_config_file_poll_wait_seconds=60"],
                "resources": {"requests": {"cpu": str(deploy.cpu), "memory": str(deploy.memory)}},
            },
        }},
    }


def tfserving_objects(model: dict, deploy, models_config: str) -> list[dict]:
    """ConfigMap + Deployment + Service + HorizontalPodAutoscaler for the official TF Serving image."""
    name = model["k8s_name"]
    labels = _labels(name)
    selector = {"app.kubernetes.io/name": name}
    meta = {"namespace": deploy.namespace, "labels": labels}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{name}-models-config", **meta, "annotations": _annotations(model)},
                  "data": {"models.config": models_config}}
    container = {
        "name": "tensorflow-serving",
        "image": str(deploy.image),
        "args": [f"--port={TF_SERVING_GRPC_PORT}", f"--rest_api_port={TF_SERVING_REST_PORT}",
                 "--model_config_file=/config/models.config", "--model_config_file_poll_wait_seconds=60"],
        "ports": [{"name": "grpc", "containerPort": TF_SERVING_GRPC_PORT},
                  {"name": "http", "containerPort": TF_SERVING_REST_PORT}],
        "resources": {"requests": {"cpu": str(deploy.cpu), "memory": str(deploy.memory)}},
        "readinessProbe": {"httpGet": {"path": f"/v1/models/{model['export_name']}", "port": TF_SERVING_REST_PORT},
                           "initialDelaySeconds": 5, "periodSeconds": 10},
        "livenessProbe": {"tcpSocket": {"port": TF_SERVING_GRPC_PORT}, "initialDelaySeconds": 15,
                          "periodSeconds": 20},
        "volumeMounts": [{"name": "models", "mountPath": f"{TFSERVING_MODEL_ROOT}/{model['export_name']}",
                          "subPath": str(model["export_name"]), "readOnly": True},
                         {"name": "config", "mountPath": "/config", "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, **meta, "annotations": _annotations(model)},
        "spec": {"replicas": int(deploy.min_replicas), "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container],
                                       "volumes": [{"name": "models", "persistentVolumeClaim": {
                                           "claimName": str(deploy.volume_claim), "readOnly": True}},
                                                   {"name": "config", "configMap": {
                                                       "name": f"{name}-models-config"}}]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, **meta},
               "spec": {"selector": selector, "type": "ClusterIP",
                        "ports": [{"name": "grpc", "port": TF_SERVING_GRPC_PORT, "targetPort": "grpc"},
                                  {"name": "http", "port": TF_SERVING_REST_PORT, "targetPort": "http"}]}}
    autoscaler = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                  "metadata": {"name": name, **meta},
                  "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                           "minReplicas": int(deploy.min_replicas), "maxReplicas": int(deploy.max_replicas),
                           "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                               "type": "Utilization",
                               "averageUtilization": int(deploy.target_cpu_utilization)}}}]}}
    return [config_map, deployment, service, autoscaler]


# --------------------------------------------------------------------------------- validation
K8S_MODELS = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Service"): "V1Service",
              ("apps/v1", "Deployment"): "V1Deployment",
              ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler"}
KSERVE_MODELS = {("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService"}


def validate(obj: dict) -> Any:
    """Validate one manifest against its schema model; returns the model instance.

    Raises ManifestError naming the object and every offending field path.
    """
    key = (obj.get("apiVersion"), obj.get("kind"))
    what = f"{key[1]} {((obj.get('metadata') or {}).get('name'))!r}"
    if key in K8S_MODELS:
        import pydantic
        from kubernetes.client import models as k8s

        try:
            return getattr(k8s, K8S_MODELS[key]).model_validate(obj)
        except pydantic.ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ManifestError(f"{what} does not match the Kubernetes schema: {problems}") from None
    if key in KSERVE_MODELS:
        from kserve import models as kserve_models

        return _kserve_model(obj, getattr(kserve_models, KSERVE_MODELS[key]), what)
    raise ManifestError(f"{what}: no schema for apiVersion={key[0]!r} kind={key[1]!r}")


_PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def _kserve_model(data: Any, klass: type, path: str) -> Any:
    """KServe's models are OpenAPI-generated classes (`openapi_types`, `attribute_map`, setters that
    check required fields and enums); nested Kubernetes types are the client's pydantic models. Walk
    the data with them: unknown keys, wrong types and missing required fields all fail."""
    import pydantic
    from kserve import models as kserve_models
    from kubernetes.client import models as k8s

    if isinstance(klass, str):
        if klass.startswith("list["):
            if not isinstance(data, list):
                raise ManifestError(f"{path}: expected a list, got {type(data).__name__}")
            return [_kserve_model(v, klass[5:-1], f"{path}[{i}]") for i, v in enumerate(data)]
        if klass.startswith("dict("):
            if not isinstance(data, dict):
                raise ManifestError(f"{path}: expected a mapping, got {type(data).__name__}")
            inner = klass[5:-1].split(", ", 1)[1]
            return {k: _kserve_model(v, inner, f"{path}.{k}") for k, v in data.items()}
        if klass in _PRIMITIVES:
            expected = _PRIMITIVES[klass]
            if not isinstance(data, expected) or (klass == "int" and isinstance(data, bool)):
                raise ManifestError(f"{path}: expected {klass}, got {type(data).__name__} {data!r}")
            return data
        if hasattr(kserve_models, klass):
            klass = getattr(kserve_models, klass)
        elif hasattr(k8s, klass):
            try:
                return getattr(k8s, klass).model_validate(data)
            except pydantic.ValidationError as e:
                problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ManifestError(f"{path} does not match the Kubernetes schema ({klass}): {problems}") from None
        else:
            raise ManifestError(f"{path}: unknown schema type {klass}")
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected an object ({klass.__name__}), got {type(data).__name__}")
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    if unknown:
        raise ManifestError(f"{path}: unknown field(s) {', '.join(unknown)} for {klass.__name__} "
                            f"(allowed: {', '.join(sorted(by_json))})")
    kwargs = {by_json[k]: _kserve_model(v, klass.openapi_types[by_json[k]], f"{path}.{k}") for k, v in data.items()}
    try:
        return klass(**kwargs)
    except ValueError as e:  # the generated setters: required fields, enum values
        raise ManifestError(f"{path} ({klass.__name__}): {e}") from None
