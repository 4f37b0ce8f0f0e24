"""Sweeps from the command line, as a user runs them: every launcher, Optuna, failed jobs, the summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import cli

TINY = ["trainer.epochs=1", "data.num_examples=256", "model.hidden_units=[8]", "export=none"]


def summary_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_a_failed_job_does_not_stop_the_sweep_and_the_exit_status_says_so(tmp_path: Path) -> None:
    # joblib: jobs side by side in worker processes; learning_rate=20 is out of range for one job only.
    result = cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.learning_rate=1e-2,20",
                 *TINY, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path, timeout=400)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 2 sweep jobs failed" in result.stderr
    rows = summary_rows(tmp_path)
    assert [(r["job"], r["status"], r["best"]) for r in rows] == [("0", "ok", "*"), ("1", "failed", "")]
    assert float(rows[0]["objective (val_loss)"]) > 0 and rows[0]["examples_per_sec"]
    assert "trainer.learning_rate" in rows[1]["error"]
    # Each job has its own run dir and run.json; the finished one its own TensorBoard dir.
    assert [json.loads((tmp_path / job / "run.json").read_text())["status"] for job in "01"] == ["ok", "failed"]
    assert (tmp_path / "0" / "tensorboard").is_dir()
    assert (tmp_path / "objective.png").is_file() and (tmp_path / "summary.md").is_file()
    assert list((tmp_path / "hparams").iterdir())


def test_optuna_search_optimises_the_returned_objective(tmp_path: Path) -> None:
    tiny = [o for o in TINY if not o.startswith("model.hidden_units")]  # model width is searched
    result = cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", *tiny,
                 f"hydra.sweep.dir={tmp_path}", cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    optuna = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    rows = summary_rows(tmp_path)
    assert len(rows) == 2 and rows[0]["best"] == "*"
    # What Optuna saw as the best value is what the best job's run.json says.
    assert float(rows[0]["objective (val_loss)"]) == pytest.approx(optuna["best_value"], rel=1e-5)
    assert {"trainer.learning_rate", "data.batch_size", "model.hidden_units"} <= set(optuna["best_params"])


def test_sweep_over_strategies_and_shard_policies_compares_them(tmp_path: Path) -> None:
    # Hydra's basic launcher: the 4 jobs one after another in this one process (one TensorFlow import).
    result = cli("-m", "strategy=default,mirrored", "data.shard=sequential,hash", "hardware.logical_devices=2",
                 *TINY, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(tmp_path)
    assert sorted((r["strategy"], r["data.shard"]) for r in rows) == [
        ("default", "hash"), ("default", "sequential"), ("mirrored", "hash"), ("mirrored", "sequential")]
    assert all(r["status"] == "ok" and r["objective (val_loss)"] for r in rows)
    replicas = {json.loads((tmp_path / r["job"] / "run.json").read_text())["strategy"]["num_replicas"]
                for r in rows if r["strategy"] == "mirrored"}
    assert replicas == {2}


@pytest.mark.slow
def test_scaleflow_launcher_runs_cluster_jobs_side_by_side_without_collisions(tmp_path: Path) -> None:
    # Two jobs at once, each a 2-worker local cluster: 4 worker processes, each job on its own ports/dirs.
    result = cli("-m", "hydra/launcher=scaleflow", "hydra.launcher.n_jobs=2", "strategy=multi_worker",
                 "strategy.num_workers=2", "trainer.learning_rate=1e-3,1e-2", *TINY, f"hydra.sweep.dir={tmp_path}",
                 cwd=tmp_path, timeout=500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rows = summary_rows(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for job in ("0", "1"):
        run = json.loads((tmp_path / job / "run.json").read_text())
        assert run["strategy"]["num_workers"] == 2 and run["status"] == "ok"
    # Each job logged its own cluster's ports; no port was used by both jobs.
    import re

    ports = {job: set(re.findall(r"\d{4,5}", line.split("ports", 1)[1].split(" in ")[0]))
             for job, line in re.findall(r"\[job (\d)\] .*(starting \d+ local workers on 127\.0\.0\.1 ports .*)",
                                         result.stdout + result.stderr)}
    assert len(ports) == 2 and not (ports["0"] & ports["1"]), ports
