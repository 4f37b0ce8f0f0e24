"""mode=explain: which input features a trained model relies on, for people who are not specialists.

    python -m scaleflow mode=explain run=outputs/2026-11-27/10-00-00
    python -m scaleflow mode=explain model_dir=export/mlp/3 data=csv data.path=test.csv explain.samples=500

On up to `explain.samples` records of `explain.split` (default: the validation split as training drew
it): integrated gradients for the predicted output of each record (class-conditional for
classification: averaged per predicted class) and, for tabular data, permutation importance on the
task's metric. Writes `explain.json` (features ranked by both methods, per class, a plain-language
summary), `explain_features.png` (top features, overall and per class) or, for images,
`explain_saliency.png` (saliency laid over the first records). Runs in one process.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from scaleflow import registry
from scaleflow.explain.attributions import (integrated_gradients, permutation_importance, target_outputs,
                                            task_metric)
from scaleflow.explain.report import plot_bars, plot_saliency, ranking, summary
from scaleflow.inference.metrics import names_for
from scaleflow.inference.source import inference_data, resolve, selected_records
from scaleflow.manifest import atomic_write_json

log = logging.getLogger("scaleflow")
MAX_CLASS_PANELS = 6
SALIENCY_RECORDS = 8


def _arrays(dataset, config, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of `indices` (sorted global ids) as NumPy."""
    if dataset.in_memory:
        x, y = dataset.gather_arrays(config, indices)
        return np.asarray(x, np.float32), np.asarray(y)
    xs, ys = [], []
    for x, y in dataset.take(config, indices).batch(1024):
        xs.append(np.asarray(x, np.float32))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


def run(cfg, run_dir: str) -> dict:
    from scaleflow.inference.scoring import LoadedModel

    options = cfg.explain
    source = resolve(cfg)
    data = inference_data(cfg, source, labelled=True)
    records = selected_records(options.split, data, source, "explain.split")
    if len(records) > options.samples:
        records = np.sort(np.random.default_rng(options.seed).choice(records, options.samples, replace=False))
    registry.get("hardware", cfg.hardware.name)().configure(cfg)
    model = LoadedModel(source.model_path)
    x, y = _arrays(data.dataset, data.config, records)
    outputs = model(x)
    task = source.metadata.get("task") or "classification"
    tabular = x.ndim == 2
    feature_names = (source.metadata.get("feature_names") if tabular else None) or \
        [f"f{i}" for i in range(x.shape[1] if tabular else 0)]
    output_names = names_for(task, outputs, source.metadata)

    # Integrated gradients, explaining each record's predicted output.
    stats = source.metadata.get("feature_stats") or {}
    baseline = np.asarray(stats["mean"], np.float32) if options.baseline == "mean" and tabular and stats.get("mean") \
        else np.zeros(x.shape[1:], np.float32)
    targets = target_outputs(task, outputs)
    ig, gap = integrated_gradients(model.forward, x, targets, baseline, steps=options.steps)
    result: dict = {"model": source.describe(), "task": task, "records": len(records), "split": options.split,
                    "data": {"name": data.config.name, "fingerprint": data.info.fingerprint},
                    "integrated_gradients": {"steps": options.steps, "baseline": options.baseline if tabular else "zero",
                                             "completeness_gap": gap}}
    files = {"explain": os.path.join(run_dir, "explain.json")}
    os.makedirs(run_dir, exist_ok=True)
    permutation = None
    if tabular:
        overall = np.abs(ig).mean(axis=0)
        metric_name, metric, higher = task_metric(task)
        base, drop, shuffled = permutation_importance(model, x, y, metric, higher, options.permutation_repeats,
                                                      options.seed)
        permutation = {"metric": metric_name, "baseline": base, "repeats": options.permutation_repeats,
                       "drop": drop.tolist(), "shuffled": shuffled.tolist()}
        result["permutation"] = {k: v for k, v in permutation.items() if k not in ("drop", "shuffled")}
        order = np.argsort(-overall, kind="stable")
        result["features"] = [{"feature": feature_names[i], "integrated_gradients": float(overall[i]),
                               "permutation_drop": float(drop[i]), f"{metric_name}_shuffled": float(shuffled[i])}
                              for i in order]
        result["top_features"] = ranking(feature_names, overall, options.top_k)
        views = {"all records": result["top_features"]}
        if task == "classification":
            per_class = {}
            for c in np.unique(targets):
                mask = targets == c
                per_class[output_names[c]] = {"records": int(mask.sum()),
                                              "top_features": ranking(feature_names, np.abs(ig[mask]).mean(0),
                                                                      options.top_k)}
            result["per_class"] = per_class
            biggest = sorted(per_class, key=lambda k: -per_class[k]["records"])[:MAX_CLASS_PANELS - 1]
            views.update({f"predicted {k}": per_class[k]["top_features"] for k in biggest})
        result["summary"] = summary(feature_names, overall, permutation)
        if options.plot:
            files["features_png"] = plot_bars(views, os.path.join(run_dir, "explain_features.png"),
                                              f"What {source.origin} relies on (integrated gradients, mean |attribution|)")
    else:
        saliency = np.abs(ig).reshape(len(ig), -1).mean(axis=0).reshape(x.shape[1:])
        result["saliency_mean"] = {"shape": list(saliency.shape), "max": float(saliency.max())}
        if task == "classification":
            result["per_class"] = {output_names[c]: {"records": int((targets == c).sum()),
                                                     "mean_abs_attribution": float(np.abs(ig[targets == c]).mean())}
                                   for c in np.unique(targets)}
        result["summary"] = ("Saliency maps show which pixels moved each prediction; brighter is more "
                             "influential. Permutation importance is computed for tabular inputs only.")
        if options.plot:
            n = min(SALIENCY_RECORDS, len(x))
            captions = [f"pred {output_names[t]}" for t in targets[:n]]
            files["saliency_png"] = plot_saliency(x[:n], ig[:n], captions, os.path.join(run_dir, "explain_saliency.png"))
    result["files"] = files
    atomic_write_json(files["explain"], result)
    print(result["summary"])
    print(f"wrote {', '.join(files.values())}")
    return result
