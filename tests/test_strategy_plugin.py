"""A new strategy is one module plus one entry point. `tests/plugins/scaleflow_pairs` is installed
for these tests only (a dist-info with its entry point on sys.path): it is validated, considered by
strategy=auto, planned by mode=plan, sharded by mode=shards and trains, with no edit in scaleflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose
from scaleflow import registry
from scaleflow.errors import ConfigError

PLUGINS = Path(__file__).resolve().parent / "plugins"


def install_entry_point(site: Path) -> None:
    """What `pip install` would leave for the plugin's metadata: a dist-info with its entry point."""
    info = site / "scaleflow_pairs-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scaleflow-pairs\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[scaleflow.strategies]\npairs = scaleflow_pairs.strategy:Pairs\n")


@pytest.fixture
def pairs(tmp_path, monkeypatch):
    """The plugin, installed for one test and forgotten after it."""
    site = tmp_path / "site"
    install_entry_point(site)
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    yield {"PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    monkeypatch.undo()
    registry.refresh()


def test_it_is_registered_and_validated(pairs):
    assert registry.registrations("strategy")["pairs"].distribution == "scaleflow-pairs"
    cfg = compose("strategy=pairs")
    assert cfg.strategy.name == "pairs" and cfg.hardware.logical_devices == 2  # what it implies
    with pytest.raises(ConfigError, match="a multiple of 2 .the pair of replicas"):
        compose("strategy=pairs", "data.batch_size=63")


def test_strategy_auto_considers_it(pairs):
    from scaleflow.strategies.auto import resolve

    assert resolve(compose("hardware.logical_devices=2")) == ("pairs", "a CPU split into a pair of logical devices")
    assert resolve(compose())[0] == "default"


def run_cli(env: dict, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaleflow", *overrides, f"hydra.run.dir={run_dir}"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_mode_plan_and_mode_shards_ask_it_for_its_topology(pairs, tmp_path):
    plan = run_cli(pairs, tmp_path / "plan", "mode=plan", "strategy=pairs")
    assert plan.returncode == 0, plan.stderr
    topology = json.loads((tmp_path / "plan" / "plan.json").read_text())["topology"]
    assert (topology["strategy"], topology["replicas"], topology["pipelines"]) == ("pairs", 2, 1)

    # strategy.num_workers does not decide the input pipelines: the strategy's topology does.
    shards = run_cli(pairs, tmp_path / "shards", "mode=shards", "strategy=pairs", "strategy.num_workers=4")
    assert shards.returncode == 0, shards.stderr
    report = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert report["strategy"] == "pairs" and len(report["pipelines"]["train"]) == 1


@pytest.mark.integration
def test_it_trains(pairs, train):
    run = train("strategy=pairs", "data.num_examples=256", "trainer.epochs=1", "model.hidden_units=[8]",
                "export=none")
    assert run["status"] == "ok"
    assert (run["strategy"]["name"], run["strategy"]["num_replicas"]) == ("pairs", 2)
