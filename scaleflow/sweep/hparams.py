"""TensorBoard HParams data for a sweep, so it shows in TensorBoard's HParams dashboard.

Layout under `<sweep_dir>/hparams/`: the experiment (every swept parameter and metric) at the top,
one run per job (`job-<n>/`) holding its parameter values and final metrics. Written with
TensorBoard's summary protos and record writer: no TensorFlow import.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from typing import List

from scaleflow.sweep.summary import JobRow


def _typed(values: List[str]) -> list:
    """All floats, all bools, or all strings: what the HParams Discrete domain accepts."""
    if all(v in ("true", "false", "True", "False") for v in values):
        return [v.lower() == "true" for v in values]
    try:
        return [float(v) for v in values]
    except ValueError:
        return [str(v) for v in values]


def write_hparams(rows: List[JobRow], params: List[str], sweep_dir: str, objective: str) -> str:
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from tensorboard.compat.proto.event_pb2 import Event
    # RecordWriter, not EventFileWriter: the latter imports TensorFlow (8 s) for its file I/O.
    from tensorboard.summary.writer.record_writer import RecordWriter

    root = os.path.join(sweep_dir, "hparams")
    shutil.rmtree(root, ignore_errors=True)  # rewritten whole at the end of each multirun
    values = {p: _typed([r.params.get(p, "") for r in rows]) for p in params}
    hparams = {p: hp.HParam(p, hp.Discrete(sorted(set(v)))) for p, v in values.items()}
    hparams["status"] = hp.HParam("status", hp.Discrete(sorted({r.status for r in rows})))
    metric_names = ["objective"] + sorted({k for r in rows for k in r.final}) + ["examples_per_sec", "duration_s"]
    metrics = [hp.Metric(m, display_name=f"objective ({objective})" if m == "objective" else m)
               for m in metric_names]

    def write(directory: str, summaries) -> None:
        os.makedirs(directory, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}.0"
        with open(os.path.join(directory, name), "wb") as f:
            writer = RecordWriter(f)
            writer.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            for summary in summaries:
                writer.write(Event(summary=summary, step=0, wall_time=time.time()).SerializeToString())
            writer.flush()

    write(root, [hp.hparams_config_pb(hparams=list(hparams.values()), metrics=metrics)])
    for i, row in enumerate(rows):
        chosen = {hparams[p]: values[p][i] for p in params}
        chosen[hparams["status"]] = row.status
        summaries = [hp.hparams_pb(chosen, trial_id=f"job-{row.job}")]
        scalars = {"objective": row.objective, **row.final, "examples_per_sec": row.examples_per_sec,
                   "duration_s": row.duration_s}
        summaries += [scalar_pb(name, float(v)) for name, v in scalars.items()
                      if v is not None and not math.isnan(float(v))]
        write(os.path.join(root, f"job-{row.job}"), summaries)
    return root
