"""mode=evaluate: a trained model's metrics on a dataset, written to the run dir.

    python -m scaleflow mode=evaluate run=outputs/2026-11-27/10-00-00 evaluate.split=validation
    python -m scaleflow mode=evaluate model_dir=export/mlp/3 data=csv data.path=test.csv data.label_column=y

Writes `evaluation.json` (model, data, records, task, metrics, per class or per target) and, for
classification and binary tasks, `confusion_matrix.json` and `confusion_matrix.png` (rows: true class,
columns: predicted class). Metrics per task: classification accuracy, loss, macro F1 and per-class
precision/recall/F1; binary adds AUC; multilabel subset and label accuracy, micro/macro F1;
regression MSE, RMSE, MAE and R^2 (per target). Evaluation runs in this process (metrics need every
record), whatever the strategy.
"""

from __future__ import annotations

import logging
import os

from scaleflow import registry
from scaleflow.inference.metrics import evaluate, names_for, plot_confusion
from scaleflow.inference.source import inference_data, resolve, selected_records
from scaleflow.manifest import atomic_write_json

log = logging.getLogger("scaleflow")


def run(cfg, run_dir: str) -> dict:
    from scaleflow.inference.scoring import LoadedModel, score

    source = resolve(cfg)
    data = inference_data(cfg, source, labelled=True)
    records = selected_records(cfg.evaluate.split, data, source, "evaluate.split")
    if cfg.strategy.get("num_workers", 1) > 1:
        log.info("mode=evaluate runs in one process (strategy.num_workers=%d is not used)", cfg.strategy.num_workers)
    registry.get("hardware", cfg.hardware.name)().configure(cfg)
    outputs, labels = score(LoadedModel(source.model_path), data.dataset, data.config, records,
                            int(cfg.data.batch_size))
    task = source.metadata.get("task") or "classification"
    result = evaluate(task, outputs, labels, names_for(task, outputs, source.metadata))

    os.makedirs(run_dir, exist_ok=True)
    report = {"model": source.describe(), "task": task,
              "data": {"name": data.config.name, "path": data.config.get("path"), "fingerprint": data.info.fingerprint,
                       "num_examples": data.info.num_examples, "split": cfg.evaluate.split, "records": len(records),
                       **{k: v for k, v in (data.info.extra.get("report") or {}).items()
                          if k in ("imputed", "unknown_categories", "unused_columns")}},
              **result}
    files = {"evaluation": os.path.join(run_dir, "evaluation.json")}
    matrix = result.get("confusion_matrix")
    if matrix is not None:
        files["confusion_matrix"] = os.path.join(run_dir, "confusion_matrix.json")
        atomic_write_json(files["confusion_matrix"], matrix)
        if cfg.evaluate.plot:
            files["confusion_matrix_png"] = plot_confusion(
                matrix, os.path.join(run_dir, "confusion_matrix.png"),
                f"{source.origin} on {data.config.name} ({cfg.evaluate.split}, {len(records)} records)")
    report["files"] = files
    atomic_write_json(files["evaluation"], report)
    shown = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items() if isinstance(v, float))
    print(f"evaluated {source.origin} on {len(records)} records ({cfg.evaluate.split}): {shown}")
    print(f"wrote {', '.join(files.values())}")
    return result["metrics"]
