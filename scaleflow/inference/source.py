"""The trained model mode=evaluate and mode=predict use, what it expects, and the data fed to it.

Resolved from files only (run.json, the export's scaleflow_export.json, the data), without TensorFlow,
during config validation: an unknown run or model dir, a run without an export, or data whose feature
columns or shape differ from the training data is a config/data error (exit 2) before TensorFlow starts.

    python -m scaleflow mode=evaluate run=outputs/2026-11-27/10-00-00             # the run's own data
    python -m scaleflow mode=predict run=outputs/... data.path=new.csv            # its data config, new file
    python -m scaleflow mode=predict model_dir=export/mlp/3 data=csv data.path=new.csv

The data config is the trained run's (from run.json) with the command line's `data.*` overrides on
top, unless the command line chooses a dataset itself (`data=...`). A CSV model's column encoding
(categories, imputed values, class list) always comes from training and is applied unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from scaleflow import registry
from scaleflow.errors import ConfigError

log = logging.getLogger("scaleflow")
EXPORT_MANIFEST = "scaleflow_export.json"


@dataclass
class ModelSource:
    """A trained model on disk.

    Args:
        origin: how the user named it (`run=<dir>` or `model_dir=<dir>`), for messages and outputs.
        model_path: the SavedModel directory to load.
        metadata: what the model expects and returns: task, class_names, input_shape, num_classes,
            feature_names, encoding (a CSV model's column encoding).
        train_config: the training run's resolved config (None when unknown).
        identity: the export's identity block (name, version, run dir, checksums), when present.
    """

    origin: str
    model_path: str
    metadata: dict
    train_config: dict | None = None
    identity: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"source": self.origin, "path": self.model_path, "task": self.metadata.get("task"),
                "identity": self.identity or None}


@dataclass
class InferenceData:
    config: DictConfig  # the effective data node
    dataset: Any
    info: Any  # DataInfo


def _load_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _run_metadata(manifest: dict) -> dict:
    """What run.json says about the model's inputs and outputs."""
    data = manifest.get("data") or {}
    config = manifest.get("config") or {}
    out = {"task": config.get("task") if isinstance(config.get("task"), str) else "classification",
           "input_shape": data.get("input_shape"), "num_classes": data.get("num_classes"),
           "data_name": data.get("name"), "shard_level": data.get("shard_level")}
    encoding = data.get("encoding")
    if encoding:
        out["encoding"] = encoding
        out["feature_names"] = encoding.get("feature_names")
        if encoding.get("classes") is not None:
            out["class_names"] = [str(c) for c in encoding["classes"]]
    for key in ("class_names", "target_names"):
        if data.get(key) is not None:
            out[key] = data[key]
    return out


def _export_manifest(model_path: str, key: str, value: str) -> dict | None:
    """The export's integrity file, verified when it is there: a changed file is refused."""
    manifest = _load_json(os.path.join(model_path, EXPORT_MANIFEST))
    if manifest is None:
        return None
    try:
        from scaleflow.export.integrity import verify_export
    except ImportError:  # pragma: no cover - integrity checks arrive with the export rework
        return manifest
    result = verify_export(model_path)
    if not result.ok:
        raise ConfigError(key, value, f"an export whose files match its {EXPORT_MANIFEST}", result.reason)
    return manifest


def _from_run(value: str) -> ModelSource:
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        raise ConfigError("run", value, "the directory of a finished training run (hydra.run.dir)",
                          "Nothing exists at that path" if not os.path.exists(path) else "It is not a directory")
    manifest = _load_json(os.path.join(path, "run.json"))
    if manifest is None:
        raise ConfigError("run", value, "a run directory holding run.json",
                          "No readable run.json there: name the directory a training run wrote")
    if manifest.get("status") != "ok":
        raise ConfigError("run", value, "a finished run (run.json status ok)",
                          f"Its status is {manifest.get('status')!r}" +
                          (f" ({manifest['error']})" if manifest.get("error") else ""))
    export = manifest.get("export") or {}
    model_path = export.get("path")
    if not model_path or export.get("format") in (None, "none"):
        raise ConfigError("run", value, "a run that exported its model",
                          "It was trained with export=none; train with export=saved_model")
    if export.get("format") != "saved_model":
        raise ConfigError("run", value, "a run with a SavedModel export",
                          f"Its export is {export.get('format')}; evaluate/predict load SavedModels")
    if not os.path.isabs(model_path) and not os.path.isdir(model_path):
        model_path = os.path.join(path, os.path.relpath(model_path, manifest.get("run_dir", path)))
    if not os.path.isdir(model_path):
        raise ConfigError("run", value, "a run whose export still exists", f"{model_path} is gone")
    metadata = _run_metadata(manifest)
    exported = _export_manifest(model_path, "run", value)
    if exported:
        metadata.update({k: v for k, v in (exported.get("metadata") or {}).items() if v is not None})
    return ModelSource(f"run={value}", model_path, metadata, manifest.get("config"),
                       (exported or {}).get("identity") or {})


def _from_export(value: str) -> ModelSource:
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        raise ConfigError("model_dir", value, "an export version directory <export.dir>/<name>/<version>",
                          "Nothing exists at that path" if not os.path.exists(path) else "It is not a directory")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        versions = sorted((d for d in os.listdir(path) if d.isdigit()), key=int)
        hint = (f"It holds versions {', '.join(versions)}: name one, e.g. model_dir={os.path.join(value, versions[-1])}"
                if versions else "No saved_model.pb there")
        raise ConfigError("model_dir", value, "an export version directory holding a SavedModel", hint)
    exported = _export_manifest(path, "model_dir", value) or {}
    identity = exported.get("identity") or {}
    run_manifest = _load_json(os.path.join(identity["run_dir"], "run.json")) if identity.get("run_dir") else None
    metadata = _run_metadata(run_manifest) if run_manifest else {"task": "classification"}
    metadata.update({k: v for k, v in (exported.get("metadata") or {}).items() if v is not None})
    return ModelSource(f"model_dir={value}", path, metadata, (run_manifest or {}).get("config"), identity)


def resolve(cfg) -> ModelSource:
    """The model named by `run=` or `model_dir=` (exactly one of them)."""
    run, model_dir = cfg.get("run"), cfg.get("model_dir")
    if run is not None and model_dir is not None:
        raise ConfigError("model_dir", model_dir, "null when run= is set",
                          "Name the model once: run=<run dir> or model_dir=<export version dir>")
    if run is None and model_dir is None:
        raise ConfigError("run", None, "a finished run dir (run=outputs/<date>/<time>) or "
                          "model_dir=<export.dir>/<name>/<version>", f"mode={cfg.mode} needs a trained model")
    return _from_run(str(run)) if run is not None else _from_export(str(model_dir))


def _override_key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def data_node(cfg, source: ModelSource) -> DictConfig:
    """The data config to evaluate/predict on: the command line's `data=...` if it chose one, else the
    training run's data config with the command line's `data.*` values on top."""
    from scaleflow.config.command import current_overrides

    overrides = current_overrides()
    trained = (source.train_config or {}).get("data")
    if any(_override_key(o) == "data" for o in overrides) or not trained:
        return cfg.data
    node = OmegaConf.create(trained)
    for o in overrides:
        key = _override_key(o)
        if key.startswith("data."):
            OmegaConf.update(node, key[len("data."):], OmegaConf.select(cfg, key), merge=False)
    return node


def inference_data(cfg, source: ModelSource, *, labelled: bool) -> InferenceData:
    """The effective data config, the dataset prepared with the model's encoding, and its description;
    data the model cannot take is a ConfigError/DataError."""
    from scaleflow.config.fields import _check_node

    node = data_node(cfg, source)
    dataset_cls = registry.get("dataset", node.name)
    _check_node("data", node, dataset_cls.Config)
    typed = OmegaConf.merge(OmegaConf.structured(dataset_cls.Config), node)
    full = OmegaConf.merge(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "data"]), {"data": typed})
    dataset_cls.validate(full)
    # Labels are read as the model's task reads them (class ids, 0/1, multi-hot rows, float targets).
    task = registry.get("task", source.metadata.get("task") or "classification")()
    dataset = dataset_cls(task=task).for_inference(source.metadata, labelled)
    info = dataset.describe(typed)
    _check_inputs(source, typed, info, labelled)
    return InferenceData(typed, dataset, info)


def _check_inputs(source: ModelSource, data: DictConfig, info, labelled: bool) -> None:
    expected = source.metadata.get("input_shape")
    where = f"data={data.name}" + (f" data.path={data.path}" if data.get("path") else "")
    if expected is not None and tuple(expected) != tuple(info.input_shape):
        names = source.metadata.get("feature_names")
        raise ConfigError("data", where, f"data with the model's inputs: {list(expected)} per record"
                          + (f" ({', '.join(names[:20])}{', ...' if len(names) > 20 else ''})" if names else ""),
                          f"{source.origin} was trained on {list(expected)}; this data gives {list(info.input_shape)}")
    classes = source.metadata.get("num_classes")
    task = source.metadata.get("task") or "classification"
    if labelled and task == "classification" and classes and info.num_classes > classes:
        raise ConfigError("data", where, f"labels the model knows (class ids below {classes})",
                          f"This data has class ids up to {info.num_classes - 1}")


def check(cfg) -> None:
    """Config validation of mode=evaluate|predict (no TensorFlow)."""
    source = resolve(cfg)
    inference_data(cfg, source, labelled=cfg.mode in ("evaluate", "explain"))
    if cfg.mode == "predict":
        if cfg.predict.format == "parquet":
            import importlib.util

            if importlib.util.find_spec("pyarrow") is None:
                raise ConfigError("predict.format", "parquet", "csv, or parquet with pyarrow installed",
                                  "pip install pyarrow")
        output = cfg.predict.output
        if output:
            parent = os.path.dirname(os.path.abspath(os.path.expanduser(output)))
            if os.path.exists(parent) and not os.path.isdir(parent):
                raise ConfigError("predict.output", output, "a file path in a directory", f"{parent} is a file")
            if os.path.isdir(os.path.expanduser(output)):
                raise ConfigError("predict.output", output, "a file path", "It is a directory")


def selected_records(split: str, data: InferenceData, source: ModelSource, key: str) -> np.ndarray:
    """Global ids of the records to use: all, or the train/validation split exactly as training drew it
    (data.validation_split and data.seed; whole files when the training run split by file)."""
    from scaleflow.data.sharding import records_of, split_files, split_indices

    n = data.info.num_examples
    if split == "all":
        return np.arange(n, dtype=np.int64)
    config = data.config
    if data.info.files and source.metadata.get("shard_level") == "file":
        train, validation = split_files(len(data.info.files), config.validation_split, config.seed)
        chosen = records_of(train if split == "train" else validation, data.info.file_records)
    else:
        train, validation = split_indices(n, config.validation_split, config.seed)
        chosen = train if split == "train" else validation
    if not len(chosen):
        raise ConfigError(key, split, "a split holding records",
                          f"data.validation_split={config.validation_split} leaves the {split} split empty")
    return np.sort(np.asarray(chosen, dtype=np.int64))
