"""mode=deploy: Kubernetes manifests for a model's verified exports, and rolling `stable` back.

    python -m scaleflow mode=deploy deploy.target=kserve run=outputs/2026-11-27/10-00-00 \\
        deploy.storage_uri=s3://models/mlp
    python -m scaleflow mode=deploy deploy.target=tfserving deploy.model_dir=/models/mlp
    python -m scaleflow mode=deploy deploy.rollback=true deploy.model_dir=/models/mlp

The model directory is `<export.dir>/<export.name>/` (from the run's run.json, or given). Only versions
whose files match their integrity manifest are deployed; the labels come from its labels.json (with
no stable label yet, the latest verified version is served as stable and the output says so).
Writes into `deploy.out` (default: this mode's run dir) models.config, the target's YAML and
deploy.json (what was deployed and why). No TensorFlow: the manifests are data.
"""

from __future__ import annotations

import logging
import os

from scaleflow.errors import ConfigError, ScaleflowError

log = logging.getLogger("scaleflow")


def model_root(cfg) -> str:
    """`<export.dir>/<export.name>` from deploy.model_dir or the run's run.json."""
    if cfg.deploy.model_dir:
        return os.path.abspath(os.path.expanduser(str(cfg.deploy.model_dir)))
    from scaleflow.manifest import Manifest

    manifest = Manifest.load(os.path.expanduser(str(cfg.run))) or {}
    exported = manifest.get("export") or {}
    if not exported.get("dir"):
        raise ConfigError("run", cfg.run, "a run dir whose run.json names an export",
                          "This run exported nothing (export=none, or it failed); give deploy.model_dir=")
    return os.path.dirname(os.path.abspath(exported["dir"]))


def check(cfg) -> None:
    """Config rules of mode=deploy (no TensorFlow, before anything runs)."""
    from scaleflow.config.paths import check_path

    d, run = cfg.deploy, cfg.get("run")
    if cfg.get("model_dir") is not None:
        raise ConfigError("model_dir", cfg.model_dir, "null with mode=deploy",
                          "mode=deploy takes deploy.model_dir=<export.dir>/<export.name> (every version), or run=")
    if bool(run) == bool(d.model_dir):
        raise ConfigError("run", run, "a run dir, or deploy.model_dir=<export.dir>/<export.name> (one of them)",
                          "e.g. python -m scaleflow mode=deploy run=outputs/2026-11-27/10-00-00")
    if run:
        check_path("run", run, "dir")
        if not os.path.isfile(os.path.join(os.path.expanduser(str(run)), "run.json")):
            raise ConfigError("run", run, "a run dir (it holds run.json)", "Nothing ran there")
    else:
        check_path("deploy.model_dir", d.model_dir, "dir")
    if d.max_replicas < d.min_replicas:
        raise ConfigError("deploy.max_replicas", d.max_replicas, f"a number >= deploy.min_replicas ({d.min_replicas})")


def verified_versions(root: str) -> tuple[list[int], dict[int, str], dict[int, dict]]:
    """(verified versions ascending, {version: why not} for the others, {version: integrity manifest})."""
    from scaleflow.export.integrity import verify_export

    ok, bad, manifests = [], {}, {}
    for entry in sorted((e for e in os.listdir(root) if e.isdigit()), key=int):
        result = verify_export(os.path.join(root, entry))
        if result.ok:
            ok.append(int(entry))
            manifests[int(entry)] = result.manifest
        else:
            bad[int(entry)] = result.reason
    return ok, bad, manifests


def run(cfg, run_dir: str) -> dict:
    from scaleflow.deploy import labels as labels_lib
    from scaleflow.deploy import manifests
    from scaleflow.manifest import atomic_write_json

    check(cfg)
    d = cfg.deploy
    root = model_root(cfg)
    key, given = ("deploy.model_dir", d.model_dir) if d.model_dir else ("run", cfg.run)
    if not os.path.isdir(root):
        raise ConfigError(key, given, "a model directory that exists", f"{root} is missing")
    versions, unusable, sealed = verified_versions(root)
    for version, why in unusable.items():
        log.warning("version %d of %s is not deployed: %s", version, root, why)
    if not versions:
        raise ConfigError(key, given, "a model directory with a verified export",
                          f"{root} has none" + (f" ({len(unusable)} unverified)" if unusable else ""))

    rolled = None
    if d.rollback:
        try:
            previous, current = labels_lib.rollback(
                root, usable=lambda v: None if v in versions else unusable.get(v, "missing"))
        except labels_lib.LabelsError as e:
            raise ScaleflowError(f"deploy.rollback: {e}") from None
        rolled = {"from": previous, "to": current}
        log.info("rolled back %s: stable %d -> %d", root, previous, current)

    current_labels = labels_lib.read_labels(root)
    notes = []
    for label, version in list(current_labels.items()):
        if version not in versions:
            notes.append(f"label {label}={version} ignored: " + unusable.get(version, "no such version"))
            del current_labels[label]
    if "stable" not in current_labels:
        current_labels["stable"] = versions[-1]
        notes.append(f"no stable label: serving the latest verified version {versions[-1]} as stable")
    served = sorted(set(current_labels.values()))
    export_name = (sealed[current_labels["stable"]].get("identity") or {}).get("name") or os.path.basename(root)
    model = {"export_name": export_name, "k8s_name": manifests.dns_name(d.name or export_name),
             "versions": served, "labels": current_labels, "root": root,
             "identity": sealed[current_labels["stable"]].get("identity"),
             "storage_uri": d.storage_uri or f"pvc://{d.volume_claim}/{export_name}"}

    out = os.path.abspath(os.path.expanduser(str(d.out or run_dir)))
    os.makedirs(out, exist_ok=True)
    base_path = manifests.KSERVE_MODEL_DIR if d.target == "kserve" else f"{manifests.TFSERVING_MODEL_ROOT}/{export_name}"
    # KServe routes /v1/models/<InferenceService name>: the served model must carry that name.
    served_name = model["k8s_name"] if d.target == "kserve" else export_name
    models_config = manifests.model_config_text(served_name, base_path, served, current_labels)
    if d.target == "kserve":
        objects = [manifests.inference_service(model, d)]
        yaml_name = "inferenceservice.yaml"
    else:
        objects = manifests.tfserving_objects(model, d, models_config)
        yaml_name = "tfserving.yaml"
    for obj in objects:
        manifests.validate(obj)  # never write what a cluster would reject
    files = {"models.config": _write(out, "models.config", models_config),
             yaml_name: _write(out, yaml_name, _yaml(objects))}
    summary = {"target": d.target, "model_dir": root, "export_name": export_name, "versions": served,
               "labels": current_labels, "rollback": rolled, "unverified": {str(k): v for k, v in unusable.items()},
               "notes": notes, "files": files, "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in objects],
               "storage_uri": model["storage_uri"] if d.target == "kserve" else None}
    atomic_write_json(os.path.join(out, "deploy.json"), summary)
    _print(summary, d)
    return summary


def _yaml(objects: list[dict]) -> str:
    """Multi-document YAML a person can read: multi-line strings (models.config) as literal blocks,
    shared dicts written out again instead of as anchors."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(objects, Dumper=Dumper, sort_keys=False, default_flow_style=False)


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def _print(summary: dict, d) -> None:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(summary["labels"].items()))
    lines = [f"deploy ({summary['target']}): {summary['export_name']} versions {summary['versions']} ({labels})"]
    if summary["rollback"]:
        lines.append(f"  rolled back stable {summary['rollback']['from']} -> {summary['rollback']['to']}")
    lines += [f"  note: {n}" for n in summary["notes"]]
    lines += [f"  wrote {p}" for p in summary["files"].values()]
    yaml_path = [p for n, p in summary["files"].items() if n.endswith(".yaml")][0]
    if summary["target"] == "kserve":
        lines.append(f"  upload {summary['model_dir']}/ and models.config to {summary['storage_uri']}, then: "
                     f"kubectl apply -f {yaml_path}")
    else:
        lines.append(f"  put {summary['model_dir']}/ on volume claim {d.volume_claim} as {summary['export_name']}/, "
                     f"then: kubectl apply -f {yaml_path}")
    print("\n".join(lines))
