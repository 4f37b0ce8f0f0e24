"""mode=shards: which records and files each input pipeline reads, without training or TensorFlow.

    python -m scaleflow mode=shards data=tfrecord data.path='data/*.tfrecord' data.shard=hash \\
        strategy.num_workers=4

prints one table per split (records, files, records read and kept per pipeline, the skew max/mean and
what `data.uneven` does) and writes `shards.json` in the run dir: per pipeline its index, record count,
files and, when `data.shard_key` is set, its keys. The number of pipelines is `strategy.num_workers`
(one input pipeline per worker process, as the tf.distribute and Horovod strategies run them).
"""

from __future__ import annotations

import json
import os

import numpy as np

from scaleflow import registry
from scaleflow.data.pipeline import InputPlan, check_shard_config, plan_input
from scaleflow.data.sharding import ShardPlan

# Keys are listed per pipeline up to this many distinct values (a count is always given).
MAX_LISTED_KEYS = 1000


def pipelines(plan: ShardPlan, keys: np.ndarray | None) -> list[dict]:
    """Per pipeline: index, records, files, read/kept and (with a shard key) its distinct keys."""
    report = plan.report()
    out = []
    for p, shard in enumerate(plan.shards):
        entry = {"index": p, "records": len(shard), "records_per_epoch": len(plan.epoch_records[p]),
                 "records_read": report["records_read"][p], "records_kept": report["records_kept"][p],
                 "read_amplification": report["read_amplification"][p],
                 "dropped": len(plan.dropped[p]), "repeated": len(plan.repeated[p]),
                 "files": [plan.files[f] for f in plan.reads[p]] if plan.files else []}
        if keys is not None:
            distinct = np.unique(np.asarray(keys)[shard].astype(str)) if len(shard) else np.array([], dtype=str)
            entry["num_keys"] = len(distinct)
            entry["keys"] = distinct[:MAX_LISTED_KEYS].tolist()
        out.append(entry)
    return out


def table(name: str, plan: ShardPlan, level_reason: str) -> str:
    report = plan.report()
    lines = [f"{name}: {plan.level} level ({level_reason}), {plan.steps} step(s) of {plan.batch_per_pipeline} "
             f"per pipeline, skew (max/mean) {report['skew']}",
             f"  {'pipeline':>8} {'records':>9} {'files':>6} {'read':>9} {'kept':>9} {'ampl.':>6} "
             f"{'dropped':>8} {'repeated':>8}"]
    for p in range(plan.num_pipelines):
        files = len(plan.reads[p]) if plan.files else "-"
        ampl = report["read_amplification"][p]
        lines.append(f"  {p:>8} {len(plan.shards[p]):>9} {files:>6} {report['records_read'][p]:>9} "
                     f"{report['records_kept'][p]:>9} {ampl if ampl is not None else '-':>6} "
                     f"{len(plan.dropped[p]):>8} {len(plan.repeated[p]):>8}")
    lines.append(f"  uneven policy {plan.describe_uneven()}")
    return "\n".join(lines)


def shards_report(cfg, plan: InputPlan, keys: np.ndarray | None) -> dict:
    out = {**plan.report(), "uneven": cfg.data.uneven, "reshuffle_each_epoch": bool(cfg.data.reshuffle_each_epoch),
           "pipelines": {"train": pipelines(plan.train, keys)}}
    if plan.validation is not None:
        out["pipelines"]["validation"] = pipelines(plan.validation, keys)
    return out


def run(cfg, run_dir: str) -> dict:
    check_shard_config(cfg)
    from scaleflow.tasks import dataset_for

    dataset = dataset_for(cfg)
    info = dataset.describe(cfg.data)
    num_pipelines = int(cfg.strategy.num_workers)
    plan = plan_input(dataset, cfg.data, info, num_pipelines, log_summary=False)  # the table says it
    keys = np.asarray(dataset.keys(cfg.data, cfg.data.shard_key)) if cfg.data.shard_key else None
    print(f"data {cfg.data.name}: {info.num_examples} records in {len(info.files) or 'no'} file(s), "
          f"data.shard={cfg.data.shard}" + (f" (key {cfg.data.shard_key})" if cfg.data.shard_key else "")
          + f", {num_pipelines} input pipeline(s) (strategy.num_workers), global batch {cfg.data.batch_size}")
    print(table("train", plan.train, plan.level_reason))
    if plan.validation is not None:
        print(table("validation", plan.validation, plan.validation_reason))
    report = shards_report(cfg, plan, keys)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "shards.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    print(f"wrote {path}")
    return report
