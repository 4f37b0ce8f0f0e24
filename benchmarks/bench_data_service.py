"""Input throughput with and without the tf.data service (data.service=local) on an input-bound job.

    python benchmarks/bench_data_service.py                    # a service with 2 workers
    python benchmarks/bench_data_service.py --workers 1,2 --work 16   # one service per count

The pipeline is input-bound on purpose: every record goes through `--work` dense 256x256 matvec+tanh
layers in its map (~0.13 MFLOP each) before batching (64), and the consumer does nothing but take
batches. It is measured three ways in the same run, through the code training uses:

  in-process       the pipeline in this process (tf.data, map with AUTOTUNE parallelism)
  service, N       `scaleflow.data.input.through_service` on a real `data.service=local` service with N
                   worker processes (static HINT sharding, reordered to the in-process stream)

  tfrecord, ...     scaleflow's own TFRecord input (`input_fn`, 64 features of 16 floats per record, no
                   cache) in process and on the same service, where each worker parses its own batches

All pipelines are kept live and read in turn in short windows (median batches/s over the windows),
so load from other processes on a shared machine falls on every case alike; the ratio to the
in-process pipeline is printed. On a machine with C cores the service can only help when the
in-process pipeline cannot use them (e.g. the trainer's own threads compete) or when the workers run
on other hosts; on one host its cost is the transfer of each batch to the trainer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BATCH = 64
WIDTH = 256


def stream(work: int):
    """An infinite pipeline of (features, label) batches whose map costs `work` matvec layers per record."""
    import tensorflow as tf

    w = tf.constant(tf.random.stateless_normal([WIDTH, WIDTH], seed=[1, 2]) / WIDTH ** 0.5)

    def heavy(i):
        x = tf.random.stateless_normal([WIDTH], seed=tf.stack([i, tf.constant(7, tf.int64)]))
        for _ in range(work):
            x = tf.tanh(tf.linalg.matvec(w, x))
        return x, i % 10

    ds = tf.data.Dataset.range(0, 2**62).map(heavy, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    return ds.batch(BATCH, drop_remainder=True).with_options(options)


def tfrecord_input(root: str, records: int):
    """(dataset, data config, input plan) of a TFRecord set whose parsing dominates its input cost."""
    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    from scaleflow import registry
    from scaleflow.data.planning import plan_input

    features = {f"f{i}": {"shape": [16], "dtype": "float32"} for i in range(64)}
    rng = np.random.default_rng(0)
    for shard in range(4):
        with tf.io.TFRecordWriter(os.path.join(root, f"part-{shard}.tfrecord")) as writer:
            for _ in range(records // 4):
                feature = {name: tf.train.Feature(float_list=tf.train.FloatList(value=rng.random(16)))
                           for name in features}
                feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rng.integers(10))]))
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    dataset = registry.get("dataset", "tfrecord")()
    config = OmegaConf.structured(dataset.Config(name="tfrecord", path=os.path.join(root, "*.tfrecord"),
                                                 features=features, label="label", num_classes=10,
                                                 batch_size=BATCH, cache=False, shuffle_buffer=0,
                                                 validation_split=0.0, service="local"))
    return dataset, config, plan_input(dataset, config, dataset.describe(config), 1, log_summary=False)


def windows(iterators: dict, rounds: int, seconds: float) -> dict:
    """name -> median batches/s over `rounds` windows of `seconds`, the cases taking turns."""
    rates = {name: [] for name in iterators}
    for _ in range(rounds):
        for name, it in iterators.items():
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                next(it)
                n += 1
            rates[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="2", help="service worker counts to measure (comma-separated)")
    parser.add_argument("--work", type=int, default=8, help="matvec layers per record in the map")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measuring window")
    parser.add_argument("--records", type=int, default=4000, help="records of the TFRecord case")
    args = parser.parse_args()

    import tensorflow as tf
    from omegaconf import OmegaConf

    from scaleflow.data.input import through_service
    from scaleflow.data.service import for_run

    counts = [int(n) for n in args.workers.split(",") if n]
    print(f"data.service benchmark: map of {args.work} matvec {WIDTH}x{WIDTH}+tanh per record, batch {BATCH}, "
          f"{os.cpu_count()} cores; median of {args.rounds} windows of {args.seconds:g} s", flush=True)
    iterators = {"in-process": iter(stream(args.work).prefetch(tf.data.AUTOTUNE))}
    started = []
    with tempfile.TemporaryDirectory() as tmp:
        from scaleflow.data.input import input_fn

        os.makedirs(os.path.join(tmp, "tfr"))
        dataset, config, plan = tfrecord_input(os.path.join(tmp, "tfr"), args.records)
        context1 = tf.distribute.InputContext(1, 0, 1)
        iterators["tfrecord in-process"] = iter(input_fn(dataset, config, plan.train, training=True, seed=0)(context1))
        contexts = []
        try:
            for n in counts:
                cfg = OmegaConf.create({"data": {"service": "local", "service_workers": n, "service_timeout_s": 300},
                                        "strategy": {"name": "default"}})
                t0 = time.perf_counter()
                context = for_run(cfg, os.path.join(tmp, f"svc{n}"))
                target = context.__enter__()
                contexts.append(context)
                started.append((n, time.perf_counter() - t0))
                ds = through_service(stream(args.work), None, target, target.job("bench", 0))
                iterators[f"service, {n} worker(s)"] = iter(ds.prefetch(tf.data.AUTOTUNE))
                remote = input_fn(dataset, config, plan.train, training=True, seed=0, service=target)
                iterators[f"tfrecord service, {n}"] = iter(remote(context1))
            for it in iterators.values():  # warm up: first elements, tracing, the jobs' start
                for _ in range(5):
                    next(it)
            rates = windows(iterators, args.rounds, args.seconds)
        finally:
            iterators.clear()  # every reader of the service goes before the service does (else exit waits)
            import gc

            gc.collect()
            for context in reversed(contexts):
                context.__exit__(None, None, None)
    for name, rate in rates.items():
        base = rates["tfrecord in-process" if name.startswith("tfrecord") else "in-process"]
        print(f"  {name:<22} {rate:9.1f} batches/s  {rate * BATCH:10.0f} records/s  {rate / base:5.2f}x in-process")
    for n, seconds in started:
        print(f"  service start-up with {n} worker(s): {seconds:.1f} s (processes up + probe job)")


if __name__ == "__main__":
    main()
