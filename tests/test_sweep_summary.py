"""The sweep summary (scaleflow.sweep): rows from each job's run.json, sorted by objective with the best
marked, a PNG, and TensorBoard HParams data that a real TensorBoard server serves. No training here:
the job dirs are written as Hydra and scaleflow leave them."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from scaleflow.errors import ConfigError
from scaleflow.sweep import objective
from scaleflow.sweep.callback import write_summary
from scaleflow.sweep.summary import collect_jobs, swept_params

JOBS = [  # (overrides, run.json status, final metrics or None when there is no run.json)
    (["trainer.learning_rate=0.001", "data.shard=sequential"], "ok", {"val_loss": 0.9, "val_accuracy": 0.7}),
    (["trainer.learning_rate=0.01", "data.shard=sequential"], "ok", {"val_loss": 0.3, "val_accuracy": 0.9}),
    (["trainer.learning_rate=0.1", "data.shard=hash"], "ok", {"val_loss": 0.5, "val_accuracy": 0.8}),
    (["trainer.learning_rate=20", "data.shard=hash"], "failed", None),
    (["trainer.learning_rate=0.5", "data.shard=hash"], None, None),  # the job's process died
]


def make_sweep(root: Path, jobs=JOBS, direction: str = "minimize", objective_name: str = "val_loss"):
    for num, (overrides, status, final) in enumerate(jobs):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
        if status is not None:
            (job / "run.json").write_text(json.dumps({
                "status": status, "error": None if status == "ok" else "ConfigError: trainer.learning_rate=20.0",
                "metrics": {"final": final, "history": {}} if final else None,
                "throughput": {"examples_per_sec": 1000.0 + num, "steps_per_sec": 10.0} if final else None,
                "duration_s": 3.5}))
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}},
                             "sweep": {"objective": objective_name, "direction": direction}})


def test_summary_has_one_row_per_job_sorted_by_objective_best_marked(tmp_path: Path) -> None:
    result = write_summary(make_sweep(tmp_path))
    assert result["jobs"] == 5 and result["failed"] == [3, 4] and result["best"] == 1
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["1", "2", "0", "3", "4"]  # best first, failed last
    assert [r["best"] for r in rows] == ["*", "", "", "", ""]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "failed"]
    assert float(rows[0]["objective (val_loss)"]) == 0.3 and rows[0]["val_accuracy"] == "0.9"
    assert rows[0]["trainer.learning_rate"] == "0.01" and rows[0]["data.shard"] == "sequential"
    assert rows[0]["examples_per_sec"] == "1001" and rows[0]["duration_s"] == "3.5"
    assert rows[3]["error"].startswith("ConfigError") and "process died" in rows[4]["error"]
    md = (tmp_path / "summary.md").read_text()
    assert "5 jobs: 3 ok, 2 failed" in md and "**Best: job 1**" in md and "![" in md
    assert (tmp_path / "objective.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_maximize_puts_the_largest_objective_first(tmp_path: Path) -> None:
    write_summary(make_sweep(tmp_path, direction="maximize", objective_name="val_accuracy"))
    with open(tmp_path / "summary.csv") as f:
        assert [r["job"] for r in csv.DictReader(f)][:3] == ["1", "2", "0"]


def test_swept_parameters_are_the_overrides_that_vary(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    rows = collect_jobs(str(tmp_path), "val_loss", "minimize")
    assert swept_params(rows) == ["trainer.learning_rate", "data.shard"]


def test_objective_value_and_direction_check() -> None:
    assert objective.value({"val_loss": 0.25}, "val_loss") == 0.25
    assert math.isnan(objective.value({"loss": 0.25}, "val_loss"))  # NaN: a failed trial for Optuna
    with pytest.raises(ConfigError, match="sweep.direction='up'.*maximize, minimize"):
        objective.check(OmegaConf.create({"sweep": {"objective": "val_loss", "direction": "up"}}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_hparams_show_in_a_real_tensorboard_server(tmp_path: Path) -> None:
    write_summary(make_sweep(tmp_path))
    port = _free_port()
    tensorboard = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen([str(tensorboard), "--logdir", str(tmp_path / "hparams"), "--port", str(port),
                               "--host", "127.0.0.1", "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}/data/plugin/hparams"
    try:
        deadline, experiment, groups, error = time.monotonic() + 90, None, None, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                experiment = _post(f"{base}/experiment", {"experimentName": ""})
                groups = _post(f"{base}/session_groups", {"experimentName": "", "allowedStatuses": [
                    "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                    "colParams": [], "startIndex": 0, "sliceSize": 100})
                if len(groups.get("sessionGroups", [])) == 5 and experiment.get("hparamInfos"):
                    break
            except OSError as e:  # not listening yet, or nothing loaded yet
                error = e
            time.sleep(1)
        assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
        assert groups and len(groups["sessionGroups"]) == 5, f"no sessions served: {error} {groups}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"trainer.learning_rate", "data.shard", "status"} <= names
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"objective", "val_loss", "val_accuracy"} <= metrics
    best = next(g for g in groups["sessionGroups"] if g["name"] == "job-1" or
                any(s["name"].endswith("job-1") for s in g["sessions"]))
    assert best["hparams"]["trainer.learning_rate"] == 0.01
    values = {m["name"]["tag"]: m["value"] for m in best["metricValues"]}
    assert values["objective"] == pytest.approx(0.3)
