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

Tables (`--tables also|only|no`; tables_main): the same rows as 8 Parquet files (row groups of 65,536)
and one CSV, at --rss-small (100k) and --records rows:

  rss         peak RSS (VmHWM) of the same short `python -m scaleflow` run (--rss-steps steps, no
              validation, export=none, data.in_memory=false for the CSV) at both sizes (goal <= 1.2x)
  throughput  worker 0 of 4, interleaved windows: Parquet file level sequential vs hash (goal hash >=
              0.9x) and hash at record level; the streamed CSV at record level, sequential (parses only
              its quarter of the blocks) vs hash (parses every block, keeps a quarter)

Per-file indexes (`--sections index,seek,rss`; scaleflow/data/index.py):

  index  describe time of the TFRecord set: first (builds the indexes), second and third (reuse
         them, each a new dataset object, as a new run would), and with data.index=off (a full scan)
  seek   record-level hash read by offset (the default with an index) against file-level hash and the
         scan it replaces, plus alternative mechanisms (--alternatives): every kept record its own
         read (gap 0), coalesced reads with 64 KiB holes, no payload checksum, and a scan that drops
         unkept records in batches before parsing; bytes read per kept byte for each
  rss    peak RSS of the default TFRecord job (a short run: 1 epoch of --rss-steps steps, export=none,
         indexes built beforehand by mode=index) on the set and on a --rss-scale times larger one
         (each file concatenated that many times: same files, more records), in fresh processes

    python benchmarks/bench_sharding.py --sections index,seek --dir /tmp/bench   # ~2 min at 1M, loaded
    python benchmarks/bench_sharding.py --sections rss --rss-scale 10 --dir /tmp/bench
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
    tfr = os.path.join(root, "tfrecord")
    os.makedirs(tfr, exist_ok=True)
    csv_path = os.path.join(root, "data.csv")
    marker = os.path.join(root, f".complete-{records}")
    if os.path.exists(marker):
        return tfr, csv_path
    import tensorflow as tf
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
    if not args.no_rss:
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


# ------------------------------------------------------------------------------ per-file indexes
def _tfrecord_config(path: str, **data):
    from omegaconf import OmegaConf

    from scaleflow import registry

    dataset = registry.get("dataset", "tfrecord")()
    config = OmegaConf.structured(dataset.Config(name="tfrecord", path=path, features={"x": {"shape": [WIDTH],
                                                 "dtype": "float32"}}, **data))
    return dataset, config


def remove_indexes(tfr: str) -> None:
    for name in os.listdir(tfr):
        if name.endswith(".sfindex"):
            os.remove(os.path.join(tfr, name))


def describe_times(tfr: str, scan: bool) -> dict:
    """Seconds to describe the set: first (builds every index), second and third (reuse them; a new
    dataset object each, as a new run) and, with `scan`, data.index=off (reads every record)."""
    remove_indexes(tfr)
    out = {}
    for name in ("first", "second", "third"):
        dataset, config = _tfrecord_config(tfr)
        started = time.perf_counter()
        info = dataset.describe(config)
        out[name] = time.perf_counter() - started
        out[f"{name}_index"] = {k: info.extra["index"][k] for k in ("built", "reused")}
    if scan:
        dataset, config = _tfrecord_config(tfr, index="off")
        started = time.perf_counter()
        dataset.describe(config)
        out["scan"] = time.perf_counter() - started
    return out


def _scan_filter_in_batches(dataset, config, plan, pipeline: int, batch: int):
    """Alternative to seeking: read every record of the opened files (TFRecordDataset), drop the
    unkept ones a batch of 1024 at a time with a boolean mask, parse only the kept ones."""
    import tensorflow as tf

    from scaleflow.data.sharding import records_of

    opened = np.asarray(plan.reads[pipeline], dtype=np.int64)
    all_ids = records_of(opened, plan.file_records)
    keep = np.zeros(-(-len(all_ids) // 1024) * 1024, dtype=bool)
    keep[np.searchsorted(all_ids, np.unique(plan.epoch_records[pipeline]))] = True
    raw = tf.data.TFRecordDataset([plan.files[f] for f in opened]).batch(1024)
    masks = tf.data.Dataset.from_tensor_slices(keep.reshape(-1, 1024))
    kept = tf.data.Dataset.zip(raw, masks).map(lambda r, m: tf.boolean_mask(r, m[:tf.shape(r)[0]]),
                                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    parsed = kept.map(dataset._parser(config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return parsed.map(dataset._batch_targets).unbatch().batch(batch).repeat()


def seek_cases(tfr: str, batch: int, alternatives: bool) -> dict:
    """name -> (factory of worker 0's batch iterator, bytes read per kept payload byte or None)."""
    import tensorflow as tf

    import scaleflow.data.tfrecord as tfrecord_module
    from scaleflow.data.input import input_fn
    from scaleflow.data.planning import plan_input

    def case(shard, level, index="auto", gap=None, checksums=True, scan_filter=False):
        dataset, config = _tfrecord_config(tfr, batch_size=batch * WORKERS, validation_split=0.0, shuffle_buffer=0,
                                           cache=False, shard=shard, shard_level=level, index=index, num_classes=10)
        plan = plan_input(dataset, config, dataset.describe(config), WORKERS, log_summary=False)
        saved = tfrecord_module.SEEK_GAP, tfrecord_module.check_payloads
        if gap is not None:
            tfrecord_module.SEEK_GAP = gap
        if not checksums:
            tfrecord_module.check_payloads = lambda *args: None
        try:
            if scan_filter:
                ds = _scan_filter_in_batches(dataset, config, plan.train, 0, batch)
            else:
                ds = input_fn(dataset, config, plan.train, training=True, seed=0)(
                    tf.distribute.InputContext(WORKERS, 0, WORKERS))
            ratio = _bytes_ratio(dataset, config, plan.train, tfrecord_module.SEEK_GAP if plan.train.seek and
                                 not scan_filter else None)
        finally:
            tfrecord_module.SEEK_GAP, tfrecord_module.check_payloads = saved
        return (lambda: iter(ds)), ratio, plan.train.report()

    cases = {"file level, hash": case("hash", "file"),
             "record level, hash: seek": case("hash", "record"),
             "record level, hash: scan (data.index=off)": case("hash", "record", index="off")}
    if alternatives:
        cases.update({"  alt: seek, a read per record (gap 0)": case("hash", "record", gap=0),
                      "  alt: seek, 64 KiB holes": case("hash", "record", gap=64 << 10),
                      "  alt: seek, no payload checksum": case("hash", "record", checksums=False),
                      "  alt: scan, drop unkept before parsing": case("hash", "record", scan_filter=True)})
    return cases


def _bytes_ratio(dataset, config, plan, gap: int | None) -> float:
    """Bytes worker 0 reads per byte of the payloads it keeps: by offset (`gap`: the seek reader's
    hole limit), or its opened files whole (None: a scan)."""
    from scaleflow.data.index import IndexOptions, open_indexes
    from scaleflow.data.tfrecord_index import byte_ranges

    indexes = open_indexes(list(plan.files), dataset._index_format(config), IndexOptions())
    mine = np.unique(plan.epoch_records[0])
    starts = np.concatenate([[0], np.cumsum(plan.file_records)])
    read = kept = 0
    for f in plan.reads[0].tolist():
        local = mine[(mine >= starts[f]) & (mine < starts[f + 1])] - starts[f]
        arrays = indexes[f].arrays
        lengths = arrays["lengths"]
        if gap is None:
            read += os.path.getsize(plan.files[f])
        else:
            read += sum(c.bytes for c in byte_ranges(arrays["offsets"], lengths, local, max_gap=gap))
        kept += int(lengths[local].sum())
    return read / kept if kept else float("nan")


def seek_section(tfr: str, args) -> None:
    cases = seek_cases(tfr, args.batch, args.alternatives)
    rates: dict = {name: [] for name in cases}
    names = list(cases)
    for w in range(args.windows):
        for name in names[w % len(names):] + names[:w % len(names)]:
            batches = cases[name][0]()
            next(batches)
            per_window = args.per_window if "scan (" not in name else max(4, args.per_window // 4)
            started = time.perf_counter()
            for _ in range(per_window):
                next(batches)
            rates[name].append(per_window * args.batch / (time.perf_counter() - started))
            del batches
    medians = {name: float(np.median(r)) for name, r in rates.items()}
    base = medians["file level, hash"]
    print(f"\nseek: worker 0 of {WORKERS}, median of {args.windows} interleaved windows "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"  {'case':<44} {'records/s':>11} {'x file hash':>12} {'read ampl.':>10} {'bytes read/kept':>15}")
    for name, rate in medians.items():
        _, ratio, report = cases[name]
        print(f"  {name:<44} {rate:>11,.0f} {rate / base:>12.3f} {report['read_amplification'][0]!s:>10} "
              f"{ratio:>15.2f}")
    print(f"ratio record-level hash (seek) / file-level hash: {medians['record level, hash: seek'] / base:.3f} "
          "(target >= 0.5)")


def peak_rss_of_job(tfr: str, steps: int, run_dir: str) -> tuple[float, float]:
    """(peak RSS MB, seconds) of `python -m scaleflow data=tfrecord ...` (the default job, short)."""
    import subprocess

    command = [sys.executable, "-m", "scaleflow", "data=tfrecord", f"data.path={tfr}",
               f"data.features={{x: {{shape: [{WIDTH}], dtype: float32}}}}", "trainer.epochs=1",
               f"trainer.steps_per_epoch={steps}", "export=none", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read()[-2000:]}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - started


def index_ahead(tfr: str) -> float:
    import subprocess

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scaleflow", "mode=index", "data=tfrecord", f"data.path={tfr}",
                    f"data.features={{x: {{shape: [{WIDTH}], dtype: float32}}}}", "hydra.run.dir=" +
                    os.path.join(tempfile.gettempdir(), "bench_sharding_index")], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def scaled_copy(root: str, tfr: str, scale: int) -> str:
    """The set with every file concatenated `scale` times (TFRecord files concatenate): the same
    files, `scale` times the records."""
    out = os.path.join(root, f"tfrecord_x{scale}")
    marker = os.path.join(root, f".complete_x{scale}")
    if not os.path.exists(marker):
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(tfr)):
            if name.endswith(".tfrecord"):
                with open(os.path.join(out, name), "wb") as dst, open(os.path.join(tfr, name), "rb") as src:
                    data = src.read()
                    for _ in range(scale):
                        dst.write(data)
        open(marker, "w").close()
    return out


def rss_section(root: str, tfr: str, args) -> None:
    big = scaled_copy(root, tfr, args.rss_scale)
    print(f"\nrss: the default TFRecord job, 1 epoch of {args.index_rss_steps} steps, export=none "
          f"(load average {os.getloadavg()[0]:.1f})")
    results = {}
    for name, path in ((f"{args.records:,} records", tfr), (f"{args.records * args.rss_scale:,} records", big)):
        indexing = index_ahead(path)
        rss, seconds = peak_rss_of_job(path, args.index_rss_steps, os.path.join(root, "rss_run"))
        results[name] = rss
        print(f"  {name:<18} peak RSS {rss:>8,.0f} MB  ({seconds:.0f} s; mode=index beforehand {indexing:.0f} s)")
    small, large = results.values()
    print(f"ratio peak RSS x{args.rss_scale} records / x1: {large / small:.3f} (target <= 1.2)")


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
    parser.add_argument("--no-rss", action="store_true", help="tables: throughput only")
    parser.add_argument("--sections", default="tfrecord,csv,index,seek,rss",
                        help="comma list of: tfrecord,csv (the original table), index, seek, rss")
    parser.add_argument("--alternatives", action="store_true", help="seek: also the alternative mechanisms")
    parser.add_argument("--scan", action="store_true", help="index: also describe with data.index=off")
    parser.add_argument("--rss-scale", type=int, default=10, help="rss: the larger set has this many times the records")
    parser.add_argument("--index-rss-steps", type=int, default=50, help="rss: steps of the short TFRecord run")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    root = args.dir or tempfile.mkdtemp(prefix="bench_sharding_")
    if args.tables == "only":
        tables_main(args, root)
        return
    t0 = time.perf_counter()
    tfr, csv_path = write_data(root, args.records)
    print(f"{args.records:,} records, {FILES} TFRecord files + 1 CSV in {root} "
          f"({time.perf_counter() - t0:.1f}s to write); worker 0 of {WORKERS}, {args.batch} records/step; "
          f"load average {os.getloadavg()[0]:.1f}")
    if "index" in sections:
        times = describe_times(tfr, args.scan)
        print(f"\nindex: describe {args.records:,} records in {FILES} files: first {times['first']:.2f} s "
              f"(builds {times['first_index']['built']} indexes), second {times['second']:.2f} s, third "
              f"{times['third']:.2f} s (reused {times['third_index']['reused']})"
              + (f"; data.index=off (scan) {times['scan']:.2f} s" if "scan" in times else "")
              + f"; load average {os.getloadavg()[0]:.1f}")
    if "seek" in sections:
        seek_section(tfr, args)
    if "rss" in sections:
        rss_section(root, tfr, args)
    if not sections & {"tfrecord", "csv"}:
        return
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
