"""mode=predict: a trained model's predictions for every record, with the record's key, as CSV or Parquet.

    python -m scaleflow mode=predict run=outputs/2026-11-27/10-00-00 data.path=new.csv
    python -m scaleflow mode=predict model_dir=export/mlp/3 data=csv data.path=new.csv predict.format=parquet
    python -m scaleflow mode=predict run=... strategy=multi_worker strategy.num_workers=2

One row per record: `index` (its global id), the `data.shard_key` column when one is set, then the
prediction: `predicted` (the class name) with `score` and `score_<class>` per class for
classification, `predicted` + `score` (binary), `predicted` (labels joined by '|') + `score_<label>`
(multilabel), `prediction` or `prediction_<target>` (regression). The label column is not needed.

Under a multi-process strategy every worker predicts its own part of the records, planned exactly as
training plans shards (`data.shard`, `data.shard_key`; no record twice, none missed, no evening), and
writes `<output>.part-<i>-of-<n>`; the launching process checks that the parts partition the records
and joins them into the output in record order. `predictions.json` in the run dir says what was
predicted, by which model, into which file.
"""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np

from scaleflow import registry
from scaleflow.data.sharding import shard_records
from scaleflow.errors import ScaleflowError
from scaleflow.inference.metrics import names_for, prediction_columns
from scaleflow.inference.source import InferenceData, ModelSource, inference_data, resolve, selected_records
from scaleflow.manifest import atomic_write_json

log = logging.getLogger("scaleflow")


def output_path(cfg, run_dir: str) -> str:
    if cfg.predict.output:
        return os.path.abspath(os.path.expanduser(cfg.predict.output))
    return os.path.join(os.path.abspath(run_dir), f"predictions.{cfg.predict.format}")


def part_path(output: str, pipeline: int, num_pipelines: int) -> str:
    return f"{output}.part-{pipeline}-of-{num_pipelines}"


def partition(data: InferenceData, records: np.ndarray, num_pipelines: int) -> list[np.ndarray]:
    """The records of each input pipeline: the training shard planner's exact partition (before any
    evening: prediction reads each record once)."""
    config = data.config
    keys = None
    if config.shard == "hash" and config.get("shard_key"):
        keys = np.asarray(data.dataset.keys(config, config.shard_key))[records]
    plan = shard_records(config.shard, records, num_pipelines, 1, "repeat", keys=keys, seed=config.seed)
    return [np.sort(s) for s in plan.shards]


def predict_part(source: ModelSource, data: InferenceData, records: np.ndarray, batch_size: int) -> dict:
    """Columns (name -> values) of the predictions for `records`, in record order (TensorFlow)."""
    from scaleflow.inference.scoring import LoadedModel, score

    model = LoadedModel(source.model_path)
    outputs, _ = score(model, data.dataset, data.config, records, batch_size)
    task = source.metadata.get("task") or "classification"
    if not len(records):  # an empty part still has the columns
        width = len(source.metadata.get("class_names") or []) or int(source.metadata.get("num_classes") or 1)
        outputs = np.zeros((0, 1 if task == "binary" else width), np.float32)
    columns: dict = {"index": records}
    key = data.config.get("shard_key")
    if key:
        columns[key] = np.asarray(data.dataset.keys(data.config, key))[records].astype(str).astype(object)
    columns.update(prediction_columns(task, outputs, names_for(task, outputs, source.metadata)))
    return columns


def write_table(path: str, columns: dict, fmt: str) -> None:
    """Write the columns atomically (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: (list(v) if np.asarray(v).dtype == object else np.asarray(v))
                                 for k, v in columns.items()}), tmp)
    else:
        names = list(columns)
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            cols = [_csv_values(columns[n]) for n in names]
            writer.writerows(zip(*cols))
    os.replace(tmp, path)


def _csv_values(values) -> list:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return [format(float(v), ".7g") for v in arr]
    return arr.tolist()


def join_parts(output: str, fmt: str, records: np.ndarray, num_pipelines: int) -> tuple[list[int], list[str]]:
    """Join the workers' parts into `output` in record order, after checking that they partition
    `records` exactly; returns (records per part, columns). The parts are removed once joined."""
    parts = [part_path(output, p, num_pipelines) for p in range(num_pipelines)]
    missing = [p for p in parts if not os.path.isfile(p)]
    if missing:
        raise ScaleflowError(f"mode=predict: worker output {missing[0]} is missing")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(p) for p in parts]
        counts = [t.num_rows for t in tables]
        table = pa.concat_tables(tables)
        index = np.asarray(table.column("index").to_numpy(), dtype=np.int64)
        header = table.column_names
    else:
        header, rows, counts = [], [], []
        for p in parts:
            with open(p, newline="") as f:
                reader = csv.reader(f)
                header = next(reader)
                body = list(reader)
            rows += body
            counts.append(len(body))
        index = np.asarray([int(r[0]) for r in rows], dtype=np.int64)
    unique, times = np.unique(index, return_counts=True)
    if (times > 1).any() or not np.array_equal(unique, np.sort(records)):
        twice = unique[times > 1][:5].tolist()
        lost = np.setdiff1d(records, unique)[:5].tolist()
        raise ScaleflowError(f"mode=predict: the workers' parts do not partition the records (predicted twice: "
                             f"{twice}, missed: {lost})")
    order = np.argsort(index, kind="stable")
    tmp = f"{output}.tmp-{os.getpid()}"
    if fmt == "parquet":
        pq.write_table(table.take(pa.array(order)), tmp)
    else:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows[i] for i in order)
    os.replace(tmp, output)
    for p in parts:
        os.remove(p)
    return counts, list(header)


def summary(cfg, source: ModelSource, data: InferenceData, records: np.ndarray, output: str,
            parts: list[int], columns: list[str]) -> dict:
    return {"model": source.describe(), "task": source.metadata.get("task") or "classification",
            "data": {"name": data.config.name, "path": data.config.get("path"), "fingerprint": data.info.fingerprint,
                     "num_examples": data.info.num_examples, "split": cfg.predict.split, "records": len(records),
                     "shard": data.config.shard, "shard_key": data.config.get("shard_key"),
                     # e.g. how many CSV cells were imputed and which categories the model never saw
                     **{k: v for k, v in (data.info.extra.get("report") or {}).items()
                        if k in ("imputed", "unknown_categories", "unused_columns")}},
            "output": output, "format": cfg.predict.format, "columns": columns,
            "parts": [{"pipeline": p, "records": n} for p, n in enumerate(parts)]}


def run(cfg, run_dir: str) -> dict:
    source = resolve(cfg)
    data = inference_data(cfg, source, labelled=False)
    records = selected_records(cfg.predict.split, data, source, "predict.split")
    output = output_path(cfg, run_dir)
    strategy = registry.get("strategy", cfg.strategy.name)()
    from scaleflow.config.command import OVERRIDES_ENV, current_overrides

    # Ranks that get the resolved config (Horovod) resolve the same data from the same overrides.
    os.environ[OVERRIDES_ENV] = json.dumps(current_overrides())
    if strategy.launches(cfg):  # the strategy's worker processes predict their parts
        status = strategy.launch(cfg, run_dir)
        if status != 0:
            raise ScaleflowError(f"strategy={cfg.strategy.name}: prediction failed (exit status {status}); see the "
                                 "log above")
        n = int(cfg.strategy.num_workers)
        parts, columns = join_parts(output, cfg.predict.format, records, n)
        result = summary(cfg, source, data, records, output, parts, columns)
        _finish(run_dir, result)
        return result

    strategy.join(cfg)  # a worker connects to its peers before the hardware step initialises TensorFlow
    registry.get("hardware", cfg.hardware.name)().configure(cfg)
    distribution = strategy.create(cfg)
    n, p = distribution.num_pipelines, distribution.worker_index
    mine = partition(data, records, n)[p]
    columns = predict_part(source, data, mine, int(cfg.data.batch_size))
    path = output if n == 1 else part_path(output, p, n)
    write_table(path, columns, cfg.predict.format)
    log.info("predicted %d of %d records (pipeline %d of %d) into %s", len(mine), len(records), p, n, path)
    result = summary(cfg, source, data, records, output if n == 1 else path, [len(mine)], list(columns))
    if n == 1:
        _finish(run_dir, result)
    return result


def _finish(run_dir: str, result: dict) -> None:
    atomic_write_json(os.path.join(run_dir, "predictions.json"), result)
    print(f"predicted {result['data']['records']} records with {result['model']['source']}: {result['output']}")
