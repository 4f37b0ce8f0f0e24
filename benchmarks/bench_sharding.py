"""Input throughput of one worker's pipeline under each shard policy and level.

    python benchmarks/bench_sharding.py                  # 1M records (the issue's size)
    python benchmarks/bench_sharding.py --records 200000 # smaller, for a shared 2-core machine
    python benchmarks/bench_sharding.py --tables only --records 10000000   # CSV + Parquet only, 10M rows

Writes the same records as 16 TFRecord files and as one CSV (in --dir, default a temp dir), then
measures records/s of worker 0's input pipeline out of 4 (`input_fn` with InputContext(4, 0, 4)),
reading from disk (no cache, no shuffle) for one epoch:

  tfrecord  file level, sequential   each worker opens 4 of the 16 files
  tfrecord  file level, hash         files hashed by path; the ratio to sequential is printed
  tfrecord  record level, hash       every worker opens every file and keeps ~1/4 (read amplification)
  csv       record level, sequential / hash   one file: every worker parses it all

The table shows one whole epoch per case (best of --repeats). The ratios come from the same run:
the TFRecord pipelines are kept live and read in turn in short windows (median records/s), so load
from other processes on a shared machine falls on every case alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WIDTH = 8
FILES = 16
WORKERS = 4


def write_data(root: str, records: int) -> tuple[str, str]:
    import tensorflow as tf

    tfr = os.path.join(root, "tfrecord")
    os.makedirs(tfr, exist_ok=True)
    csv_path = os.path.join(root, "data.csv")
    marker = os.path.join(root, f".complete-{records}")
    if os.path.exists(marker):
        return tfr, csv_path
    rng = np.random.default_rng(0)
    x = rng.normal(size=(records, WIDTH)).astype(np.float32)
    x[:, 0] = np.arange(records)
    labels = np.arange(records) % 10
    bounds = np.linspace(0, records, FILES + 1).astype(int)
    for f in range(FILES):
        with tf.io.TFRecordWriter(os.path.join(tfr, f"part-{f:05d}.tfrecord")) as writer:
            for i in range(bounds[f], bounds[f + 1]):
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]])),
                })).SerializeToString())
    header = ",".join([f"x{j}" for j in range(WIDTH)] + ["label"])
    np.savetxt(csv_path, np.column_stack([x, labels]), delimiter=",", header=header, comments="",
               fmt=["%.6g"] * WIDTH + ["%d"])
    open(marker, "w").close()
    return tfr, csv_path


def build(kind: str, path: str, shard: str, level: str, batch: int):
    """(a factory of worker 0's batch iterator, its shard plan) for one case; every iterator reads
    from disk from the start of the epoch (no cache, no shuffle)."""
    import tensorflow as tf
    from omegaconf import OmegaConf

    from scaleflow import registry
    from scaleflow.data.input import input_fn
    from scaleflow.data.planning import plan_input

    dataset = registry.get("dataset", kind)()
    extra = ({"features": {"x": {"shape": [WIDTH], "dtype": "float32"}}, "num_classes": 10} if kind == "tfrecord"
             else {"label_column": "label"})
    config = OmegaConf.structured(dataset.Config(name=kind, path=path, batch_size=batch * WORKERS,
                                                 validation_split=0.0, shuffle_buffer=0, cache=False, shard=shard,
                                                 shard_level=level, **extra))
    info = dataset.describe(config)
    plan = plan_input(dataset, config, info, WORKERS, log_summary=False)
    fn = input_fn(dataset, config, plan.train, training=True, seed=0)
    return (lambda: iter(fn(tf.distribute.InputContext(WORKERS, 0, WORKERS)))), plan


def measure(kind: str, path: str, shard: str, level: str, batch: int) -> dict:
    """One whole epoch of worker 0, from describing the data to its last batch."""
    started = time.perf_counter()
    make, plan = build(kind, path, shard, level, batch)
    batches = make()
    next(batches)
    first = time.perf_counter()
    for _ in range(plan.train.steps - 1):
        next(batches)
    ended = time.perf_counter()
    report = plan.train.report()
    return {"records_per_s": (plan.train.steps - 1) * batch / (ended - first), "setup_s": first - started,
            "end_to_end_per_s": plan.train.steps * batch / (ended - started),
            "level": plan.level, "records": report["records"][0], "read": report["records_read"][0],
            "amplification": report["read_amplification"][0]}


def interleaved(cases: list, batch: int, windows: int, per_window: int) -> dict:
    """Median records/s per case over short windows taken in turn (each from a fresh iterator, its
    first batch untimed), so load from other processes on a shared machine hits every case alike.
    The ratios come from these."""
    makers = {case: build(*case, batch)[0] for case in cases}
    rates: dict = {case: [] for case in cases}
    for w in range(windows):
        for case in cases[w % len(cases):] + cases[:w % len(cases)]:
            batches = makers[case]()
            next(batches)
            started = time.perf_counter()
            for _ in range(per_window):
                next(batches)
            rates[case].append(per_window * batch / (time.perf_counter() - started))
            del batches
    return {case: float(np.median(r)) for case, r in rates.items()}


# ------------------------------------------------------------------- CSV and Parquet (streamed tables)
TABLE_FILES = 8  # Parquet files; row groups of ROW_GROUP rows are the file-level shard units
ROW_GROUP = 65536
CHUNK = 500_000  # rows generated and written at a time (the writer's memory stays bounded)

RSS_PROBE = """
import os, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("PEAK_RSS_KB", int(line.split()[1]), flush=True)
import atexit
atexit.register(peak)
sys.argv = ["scaleflow", *sys.argv[1:]]
runpy.run_module("scaleflow", run_name="__main__", alter_sys=True)
"""


def write_tables(root: str, records: int) -> tuple[str, str]:
    """The records as TABLE_FILES Parquet files and one CSV (x0 = record id, x1..x7 normal, label =
    id % 10), written chunk by chunk with pyarrow; reused when already there."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    pq_dir = os.path.join(root, f"parquet-{records}")
    csv_path = os.path.join(root, f"table-{records}.csv")
    marker = os.path.join(root, f".tables-complete-{records}")
    if os.path.exists(marker):
        return pq_dir, csv_path
    os.makedirs(pq_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    bounds = np.linspace(0, records, TABLE_FILES + 1).astype(np.int64)
    schema = pa.schema([(f"x{j}", pa.float32()) for j in range(WIDTH)] + [("label", pa.int64())])
    with pacsv.CSVWriter(csv_path, schema) as csv_writer:
        for f in range(TABLE_FILES):
            with pq.ParquetWriter(os.path.join(pq_dir, f"part-{f:05d}.parquet"), schema) as writer:
                for start in range(int(bounds[f]), int(bounds[f + 1]), CHUNK):
                    ids = np.arange(start, min(start + CHUNK, int(bounds[f + 1])))
                    x = rng.normal(size=(len(ids), WIDTH)).astype(np.float32)
                    x[:, 0] = ids
                    table = pa.table({**{f"x{j}": x[:, j] for j in range(WIDTH)}, "label": ids % 10}, schema=schema)
                    writer.write_table(table, row_group_size=ROW_GROUP)
                    csv_writer.write_table(table)
    open(marker, "w").close()
    return pq_dir, csv_path


def short_run_rss(kind: str, path: str, steps: int, batch: int, run_dir: str) -> dict:
    """Peak RSS (VmHWM) of `python -m scaleflow` training `steps` steps on the source, in its own
    process: describe, plan, read, train; no validation split, no export (the same work at any size)."""
    import subprocess

    data = [f"data={kind}", f"data.path={path}", "data.label_column=label"]
    if kind == "csv":
        data.append("data.in_memory=false")  # the streamed reader at both sizes (auto would read 100k in memory)
    overrides = [*data, f"data.batch_size={batch}", "data.validation_split=0.0", "data.shuffle_buffer=1024",
                 "trainer.epochs=1", f"trainer.steps_per_epoch={steps}", "export=none", "model.hidden_units=[32]",
                 "trainer.verbose=quiet", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RSS_PROBE, *overrides], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=1800)
    seconds = time.perf_counter() - started
    peak = [line for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    if result.returncode != 0 or not peak:
        raise SystemExit(f"{kind} run failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    import json

    run = json.loads(open(os.path.join(run_dir, "run.json")).read())
    return {"peak_rss_mb": int(peak[-1].split()[1]) / 1024, "seconds": seconds,
            "reader": (run["data"].get("reader") or {}).get("mode"), "records": run["data"]["num_examples"]}


def tables_main(args, root: str) -> None:
    """CSV and Parquet: peak RSS of the same short run on --rss-small rows and on --records rows
    (goal: <= 1.2x), Parquet file-level hash vs sequential and the streamed CSV's record level."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    small_pq, small_csv = write_tables(root, args.rss_small)
    big_pq, big_csv = write_tables(root, args.records)
    print(f"tables: {args.rss_small:,} and {args.records:,} rows as {TABLE_FILES} Parquet files (row groups of "
          f"{ROW_GROUP:,}) + 1 CSV in {root} ({time.perf_counter() - t0:.1f}s to write; CSV "
          f"{os.path.getsize(big_csv) / 2**20:.0f} MB at {args.records:,}); load average {load[0]:.1f}")
    print(f"\npeak RSS of a short run (python -m scaleflow, {args.rss_steps} steps of {args.batch}, 1 worker):")
    print(f"{'source':<9} {'rows':>11} {'reader':<10} {'peak RSS MB':>12} {'seconds':>8}")
    ratios = {}
    for kind, small, big in (("parquet", small_pq, big_pq), ("csv", small_csv, big_csv)):
        results = []
        for rows, path in ((args.rss_small, small), (args.records, big)):
            r = short_run_rss(kind, path, args.rss_steps, args.batch, os.path.join(root, f"run-{kind}-{rows}"))
            results.append(r)
            print(f"{kind:<9} {rows:>11,} {str(r['reader']):<10} {r['peak_rss_mb']:>12,.0f} {r['seconds']:>8.1f}")
        ratios[kind] = results[1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    for kind, ratio in ratios.items():
        print(f"ratio {kind} peak RSS {args.records:,} / {args.rss_small:,} rows: {ratio:.3f} (target <= 1.2)")
    if args.no_throughput:
        return
    print(f"\ninterleaved steady state, worker 0 of {WORKERS}, {args.records:,} rows, median of {args.windows} windows "
          f"of {args.per_window} batches (load average {os.getloadavg()[0]:.1f}):")
    cases = [("parquet", big_pq, "sequential", "file"), ("parquet", big_pq, "hash", "file"),
             ("parquet", big_pq, "hash", "record"), ("csv", big_csv, "sequential", "record"),
             ("csv", big_csv, "hash", "record")]
    medians = interleaved(cases, args.batch, args.windows, args.per_window)
    for case, rate in medians.items():
        print(f"  {case[0]:<8} {case[2]:<11} {case[3]:<7} {rate:>11,.0f} records/s")
    print(f"ratio parquet hash/sequential at file level: {medians[cases[1]] / medians[cases[0]]:.3f} (target >= 0.9)")
    print(f"ratio parquet hash record level / hash file level: {medians[cases[2]] / medians[cases[1]]:.3f}")
    print(f"ratio csv (streamed) hash / sequential at record level: {medians[cases[4]] / medians[cases[3]]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256, help="records per worker per step")
    parser.add_argument("--repeats", type=int, default=1, help="whole-epoch passes per case (best kept)")
    parser.add_argument("--windows", type=int, default=15, help="interleaved windows per TFRecord case")
    parser.add_argument("--per-window", type=int, default=40, help="batches per window")
    parser.add_argument("--dir", default=None, help="where to write the data (reused if already there)")
    parser.add_argument("--tables", choices=("also", "only", "no"), default="also",
                        help="the CSV and Parquet sections (tables_main): also, only them, or not")
    parser.add_argument("--rss-small", type=int, default=100_000, help="rows of the baseline run for peak RSS")
    parser.add_argument("--rss-steps", type=int, default=200, help="training steps of each peak-RSS run")
    parser.add_argument("--no-throughput", action="store_true", help="tables: peak RSS only")
    args = parser.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="bench_sharding_")
    if args.tables == "only":
        tables_main(args, root)
        return
    t0 = time.perf_counter()
    tfr, csv_path = write_data(root, args.records)
    print(f"{args.records:,} records, {FILES} TFRecord files + 1 CSV in {root} "
          f"({time.perf_counter() - t0:.1f}s to write); worker 0 of {WORKERS}, {args.batch} records/step")
    cases = [("tfrecord", tfr, "sequential", "file"), ("tfrecord", tfr, "hash", "file"),
             ("tfrecord", tfr, "hash", "record"), ("csv", csv_path, "sequential", "record"),
             ("csv", csv_path, "hash", "record")]
    best: dict = {}
    for _ in range(args.repeats):
        for case in cases:
            result = measure(case[0], case[1], case[2], case[3], args.batch)
            if case not in best or result["records_per_s"] > best[case]["records_per_s"]:
                best[case] = result
    print("records/s: steady state after the first batch; with setup: the whole epoch including describe, plan,"
          " opening/parsing (a CSV is parsed whole by every worker)")
    print(f"{'source':<9} {'shard':<11} {'level':<7} {'records/s':>11} {'with setup':>11} {'setup s':>8} {'kept':>9} "
          f"{'read':>9} {'read ampl.':>10}")
    for case in cases:
        r = best[case]
        print(f"{case[0]:<9} {case[2]:<11} {r['level']:<7} {r['records_per_s']:>11,.0f} "
              f"{r['end_to_end_per_s']:>11,.0f} {r['setup_s']:>8.2f} "
              f"{r['records']:>9,} {r['read']:>9,} {r['amplification']:>10}")
    print(f"\ninterleaved steady state, TFRecord, median of {args.windows} windows of {args.per_window} batches:")
    medians = interleaved(cases[:3], args.batch, args.windows, args.per_window)
    for case, rate in medians.items():
        print(f"  {case[2]:<11} {case[3]:<7} {rate:>11,.0f} records/s")
    seq, hashed, rec = (medians[c] for c in cases[:3])
    print(f"ratio tfrecord hash/sequential at file level: {hashed / seq:.3f} (target >= 0.9)")
    print(f"ratio tfrecord hash record level / hash file level: {rec / hashed:.3f}, "
          f"read amplification {best[cases[2]]['amplification']}")
    print(f"ratio csv hash / tfrecord hash file level, whole epoch with setup: "
          f"{best[cases[4]]['end_to_end_per_s'] / best[cases[1]]['end_to_end_per_s']:.3f}")
    if args.tables == "also":
        print()
        tables_main(args, root)


if __name__ == "__main__":
    main()
