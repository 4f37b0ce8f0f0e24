"""mode=index: build every data file's index ahead of time, in parallel over files, without TensorFlow.

    python -m scaleflow mode=index data=tfrecord data.path='data/train-*.tfrecord' data.index_workers=8

Indexes what describing the data would (for TFRecord: offsets, the label, `data.shard_key` when set),
where describing would look (`data.index_dir`, `data.index_check`: see scaleflow/data/index.py), so
the first training run starts at once. Files whose index is current are left alone; several
`mode=index` runs (e.g. one per host on shared storage) split the files between them through the
same per-file locks. Prints one line per file and writes `index.json` in the run dir.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor

from scaleflow.data.index import IndexOptions, open_indexes
from scaleflow.errors import ConfigError, DataError, ScaleflowError
from scaleflow.manifest import atomic_write_json


def _index_one(job: tuple) -> dict:
    """One file (in a worker process): its index read or built. Errors come back as text, since
    scaleflow's errors do not pickle."""
    path, fmt, options = job
    started = time.perf_counter()
    try:
        [ix] = open_indexes([path], fmt, options)
    except ScaleflowError as e:
        return {"file": path, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a format's own read error, named with its file
        return {"file": path, "error": f"{path}: {e}"}
    return {"file": path, "records": ix.meta.get("records"), "status": ix.status, "index": ix.location,
            "seconds": round(time.perf_counter() - started, 3)}


def run(cfg, run_dir: str) -> dict:
    from scaleflow.tasks import dataset_for

    dataset = dataset_for(cfg)
    planned = dataset.index_format(cfg.data)
    if planned is None:
        raise ConfigError("mode", "index", "a dataset with per-file indexes (data=tfrecord)",
                          f"data={cfg.data.name} keeps no index")
    files, fmt = planned
    options = IndexOptions.from_config(cfg.data)
    if not options.enabled:
        raise ConfigError("data.index", "off", "auto with mode=index")
    workers = max(1, min(cfg.data.index_workers or os.cpu_count() or 1, len(files) or 1))
    print(f"indexing {len(files)} file(s) of data={cfg.data.name} with {workers} process(es) "
          f"(data.index_check={options.check}, data.index_dir={options.index_dir or 'next to the data'})")
    started = time.perf_counter()
    jobs = [(path, fmt, options) for path in files]
    if workers == 1:
        results = [_index_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_index_one, jobs))
    seconds = time.perf_counter() - started
    for r in results:
        if "error" not in r:
            print(f"  {r['status'].split(':')[0]:<8} {r['records']:>11,} records {r['seconds']:>8.2f} s  {r['file']}")
    failed = [r for r in results if "error" in r]
    report = {"files": len(files), "workers": workers, "seconds": round(seconds, 3), "check": options.check,
              "built": sum(r.get("status") == "built" for r in results),
              "rebuilt": sum(str(r.get("status", "")).startswith("rebuilt") for r in results),
              "reused": sum(r.get("status") == "reused" for r in results),
              "records": sum(r.get("records") or 0 for r in results), "failed": len(failed), "per_file": results}
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(os.path.join(run_dir, "index.json"), report)
    print(f"{report['records']:,} records: {report['built']} built, {report['rebuilt']} rebuilt, "
          f"{report['reused']} already current in {seconds:.2f} s; wrote {os.path.join(run_dir, 'index.json')}")
    if failed:
        raise DataError(failed[0]["file"], failed[0]["error"].split(": ", 1)[-1]
                        + (f" (and {len(failed) - 1} more file(s): see index.json)" if len(failed) > 1 else ""))
    return report
