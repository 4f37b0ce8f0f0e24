"""Input throughput of one worker's pipeline under each shard policy and level.

    python benchmarks/bench_sharding.py                  # 1M records (the issue's size)
    python benchmarks/bench_sharding.py --records 200000 # smaller, for a shared 2-core machine

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256, help="records per worker per step")
    parser.add_argument("--repeats", type=int, default=1, help="whole-epoch passes per case (best kept)")
    parser.add_argument("--windows", type=int, default=15, help="interleaved windows per TFRecord case")
    parser.add_argument("--per-window", type=int, default=40, help="batches per window")
    parser.add_argument("--dir", default=None, help="where to write the data (reused if already there)")
    args = parser.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="bench_sharding_")
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


if __name__ == "__main__":
    main()
