"""mode=shards: which records and files each input pipeline reads, without training or TensorFlow.

    python -m scaleflow mode=shards data=tfrecord data.path='data/*.tfrecord' data.shard=hash \\
        strategy.num_workers=4

prints one table per split (records, files, records read and kept per pipeline, the skew max/mean and
what `data.uneven` does) and writes `shards.json` in the run dir: per pipeline its index, record count,
files and, when `data.shard_key` is set, every one of its keys: inline when each pipeline has at most
INLINE_KEYS of them, else in the companion file `shard_keys.json` (`keys_file` says so). The number
of pipelines is the strategy's (`Strategy.topology`: one per worker process for multi_worker and
horovod, one per TPU host for tpu, one for mirrored), as `mode=plan` shows it.
"""

from __future__ import annotations

import os

import numpy as np

from scaleflow.data.planning import InputPlan, plan_input
from scaleflow.data.sharding import ShardPlan
from scaleflow.manifest import atomic_write_json
from scaleflow.planning.topology import figures, layout

# shards.json lists each pipeline's keys inline up to this many; beyond, every key goes to KEYS_FILE.
INLINE_KEYS = 1000
KEYS_FILE = "shard_keys.json"


def pipelines(plan: ShardPlan, keys: np.ndarray | None) -> list[dict]:
    """Per pipeline: index, records, files, read/kept and (with a shard key) all its distinct keys."""
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
            entry["keys"] = distinct.tolist()
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


def split_keys(report: dict) -> dict | None:
    """When a pipeline has more than INLINE_KEYS keys, move every pipeline's keys out of `report`
    (in place: `keys_file` names where they went) and return them: {split: [keys of pipeline i]}."""
    entries = [e for split in report["pipelines"].values() for e in split]
    if not any(len(e.get("keys") or []) > INLINE_KEYS for e in entries):
        return None
    moved = {split: [e.pop("keys") for e in split_entries] for split, split_entries in report["pipelines"].items()}
    for e in entries:
        e["keys_file"] = KEYS_FILE
    report["keys_file"] = KEYS_FILE
    return moved


def run(cfg, run_dir: str) -> dict:
    from scaleflow.tasks import dataset_for

    dataset = dataset_for(cfg)
    info = dataset.describe(cfg.data)
    lay = layout(cfg, figures(cfg))  # the strategy says how many input pipelines it runs
    num_pipelines = lay.pipelines
    plan = plan_input(dataset, cfg.data, info, num_pipelines, log_summary=False)  # the table says it
    keys = np.asarray(dataset.keys(cfg.data, cfg.data.shard_key)) if cfg.data.shard_key else None
    print(f"data {cfg.data.name}: {info.num_examples} records in {len(info.files) or 'no'} file(s), "
          f"data.shard={cfg.data.shard}" + (f" (key {cfg.data.shard_key})" if cfg.data.shard_key else "")
          + f", {num_pipelines} input pipeline(s) (strategy={lay.strategy}: {lay.workers} process(es), "
          f"{lay.replicas} replica(s)), global batch {cfg.data.batch_size}")
    print(table("train", plan.train, plan.level_reason))
    if plan.validation is not None:
        print(table("validation", plan.validation, plan.validation_reason))
    report = {"strategy": lay.strategy, **shards_report(cfg, plan, keys)}
    os.makedirs(run_dir, exist_ok=True)
    moved = split_keys(report)
    if moved is not None:
        atomic_write_json(os.path.join(run_dir, KEYS_FILE), moved)
        print(f"wrote every pipeline's keys to {os.path.join(run_dir, KEYS_FILE)} (more than {INLINE_KEYS} "
              "in a pipeline)")
    path = os.path.join(run_dir, "shards.json")
    atomic_write_json(path, report)
    print(f"wrote {path}")
    return report
