"""What data protection costs on input: encrypted vs clear TFRecord reading, masking on vs off.

    python benchmarks/bench_security.py                     # 200k records, 50k CSV rows (~1.5 min here)
    python benchmarks/bench_security.py --records 1000000   # the issue's 1M-record set (slower)

TFRecord: the same records as 8 files in clear and encrypted (AES-256-GCM, scaleflow.crypt format);
records/s of the dataset's `read` (parse included, no cache, no shuffle) over one pass; the encrypted
set's first pass adds the one-off decryption into memory (ram://), timed on its own. CSV: records/s of
the table read (parse, checks, encoding) with and without `data.mask` (hash an id column and a
category column, bucket one numeric column, noise another). Each pair is measured back to back --repeats
times and the median ratio printed, so load from other processes falls on both sides alike.
Goal: each ratio >= 0.8x.
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

WIDTH, FILES = 16, 8
KEY = bytes(range(32))


def write_tfrecords(root: str, records: int) -> tuple[str, str]:
    import tensorflow as tf

    from scaleflow.security import crypto

    clear, encrypted = os.path.join(root, "clear"), os.path.join(root, "encrypted")
    os.makedirs(clear), os.makedirs(encrypted)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(records, WIDTH)).astype(np.float32)
    bounds = np.linspace(0, records, FILES + 1).astype(int)
    for f in range(FILES):
        path = os.path.join(clear, f"part-{f:03d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(bounds[f], bounds[f + 1]):
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 10]))})).SerializeToString())
        crypto.encrypt_file(path, os.path.join(encrypted, os.path.basename(path)), KEY)
    return clear, encrypted


def write_csv(path: str, records: int) -> None:
    rng = np.random.default_rng(1)
    with open(path, "w") as f:
        f.write("user_id,city,age,income," + ",".join(f"x{j}" for j in range(6)) + ",label\n")
        for i in range(records):
            xs = ",".join(f"{v:.4f}" for v in rng.normal(size=6))
            f.write(f"u{i:08d},city{i % 50},{20 + i % 60},{30000 + (i * 37) % 90000},{xs},{i % 3}\n")


def tfrecord_pass(cfg) -> float:
    from scaleflow import registry

    start = time.perf_counter()
    n = sum(int(b[1].shape[0]) for b in registry.get("dataset", "tfrecord")().read(cfg.data).batch(4096))
    return n / (time.perf_counter() - start)


def csv_read(cfg) -> float:
    from scaleflow import registry
    from scaleflow.data import tabular

    tabular._tables.clear()
    start = time.perf_counter()
    _, x, _, _ = registry.get("dataset", "csv")().prepare(cfg.data)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--csv-records", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from scaleflow.cli import compose
    from scaleflow.security import crypto

    os.environ["SF_BENCH_KEY"] = KEY.hex()
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        clear_dir, enc_dir = write_tfrecords(root, args.records)
        write_csv(os.path.join(root, "people.csv"), args.csv_records)
        print(f"wrote {args.records:,} TFRecord records ({FILES} files, {WIDTH} floats each) and a "
              f"{args.csv_records:,}-row CSV in {time.perf_counter() - t0:.0f}s")
        feats = f"data.features={{x: {{shape: [{WIDTH}], dtype: float32}}}}"
        clear_cfg = compose(["data=tfrecord", f"data.path={clear_dir}", feats, "data.num_classes=10"])
        enc_cfg = compose(["data=tfrecord", f"data.path={enc_dir}", feats, "data.num_classes=10",
                           "data.encryption.key_env=SF_BENCH_KEY"])
        tfrecord_pass(clear_cfg)  # warm-up: TensorFlow's first pipeline pays for tracing and thread pools
        start = time.perf_counter()  # what a process pays once: decrypt every file into ram://
        for name in sorted(os.listdir(enc_dir)):
            crypto.tensorflow_path(os.path.join(enc_dir, name))
        decrypt_s = time.perf_counter() - start
        clear, encrypted = [], []
        for _ in range(args.repeats):
            clear.append(tfrecord_pass(clear_cfg))
            encrypted.append(tfrecord_pass(enc_cfg))

        csv = os.path.join(root, "people.csv")
        base = ["data=csv", f"data.path={csv}", "data.categorical_columns=[city]", "data.shard_key=user_id"]
        off_cfg = compose(base)
        on_cfg = compose(base + ["+data.mask={user_id: hash, city: hash, age: {method: bucket, edges: [30, 45, 60]}, "
                                 "income: {method: noise, scale: 1000}}", "data.mask_key_env=SF_BENCH_KEY"])
        crypto.configure_data(off_cfg.data)
        off, on = [], []
        for _ in range(args.repeats):
            off.append(csv_read(off_cfg))
            on.append(csv_read(on_cfg))

    # Ratios per repeat (each pair measured back to back, so load changes hit both sides), median.
    enc_ratio = float(np.median([e / c for c, e in zip(clear, encrypted)]))
    first = [args.records / (args.records / e + decrypt_s) for e in encrypted]
    first_ratio = float(np.median([f / c for c, f in zip(clear, first)]))
    mask_ratio = float(np.median([m / o for o, m in zip(off, on)]))
    print(f"decrypting the {FILES} encrypted files into memory took {decrypt_s:.3f}s (once per process)")
    rows = [("TFRecord read, clear", np.median(clear), None),
            ("TFRecord read, encrypted (1st pass, incl. decrypt)", np.median(first), first_ratio),
            ("TFRecord read, encrypted (later pass)", np.median(encrypted), enc_ratio),
            ("CSV read, masking off", np.median(off), None),
            ("CSV read, masking on (hash x2, bucket, noise)", np.median(on), mask_ratio)]
    print(f"\n{'case (median of ' + str(args.repeats) + ' repeats)':<52} {'records/s':>12} {'ratio':>7}")
    for name, rate, ratio in rows:
        print(f"{name:<52} {rate:>12,.0f} {'' if ratio is None else f'{ratio:.2f}x':>7}")
    print("\ngoal: >= 0.80x for encrypted vs clear and masking on vs off")


if __name__ == "__main__":
    main()
