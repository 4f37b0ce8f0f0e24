"""Hardware targets (cpu, gpu, tpu, cluster): what they say about a machine, and how strategy=auto
and strategy=tpu choose from them."""

from __future__ import annotations

import pytest

from conftest import cli, compose
from scaleflow.errors import ConfigError


@pytest.mark.parametrize("topology, replicas, hosts", [
    ("v2-8", 8, 1), ("v3-8", 8, 1), ("v3-32", 32, 4), ("v4-8", 4, 1), ("v4-32", 16, 4),
    ("v5e-8", 8, 1), ("v5litepod-16", 16, 4), ("v5p-8", 4, 1), ("v6e-8", 8, 1),
])
def test_tpu_topology_names_give_replicas_and_hosts(topology, replicas, hosts):
    from scaleflow.hardware.tpu import parse_topology

    s = parse_topology(topology)
    assert (s.replicas, s.hosts) == (replicas, hosts)


def test_an_unknown_topology_is_a_config_error_before_anything_runs(tmp_path):
    result = cli("strategy=tpu", "hardware.topology=v9-8", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode == 2
    assert "hardware.topology='v9-8'" in result.stderr and "v3-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_target_carries_planner_figures():
    from scaleflow.planning.topology import figures

    for overrides in (["hardware=cpu"], ["hardware=gpu"], ["hardware=tpu", "strategy=tpu"],
                      ["hardware=cluster", "hardware.hosts=[h1,h2]", "hardware.devices_per_host=2"]):
        figs = figures(compose(*overrides))
        assert figs.peak_flops > 0 and figs.memory_bytes > 0 and figs.bandwidth_bytes_s > 0
        assert figs.latency_s > 0 and figs.inter_host_bandwidth_bytes_s > 0 and figs.precision
    tpu = figures(compose("strategy=tpu", "hardware.topology=v5e-8", "hardware.peak_flops=1e14"))
    assert tpu.peak_flops == 1e14 and tpu.memory_bytes == 16 * 2**30 and tpu.precision == "bfloat16"
    cluster = figures(compose("hardware=cluster", "hardware.hosts=[h1,h2]", "hardware.devices_per_host=2"))
    assert (cluster.hosts, cluster.devices_per_host) == (2, 2)


@pytest.mark.parametrize("overrides, expected, why", [
    (["hardware=tpu"], "tpu", "hardware=tpu"),
    (["hardware.logical_devices=2"], "mirrored", "logical_devices=2"),
    (["hardware=cluster", "hardware.devices_per_host=2"], "mirrored", "one host with 2 devices"),
    ([], "default", "one device"),
])
def test_auto_resolves_from_the_hardware_and_says_why(overrides, expected, why):
    from scaleflow.strategies.auto import resolve

    name, reason = resolve(compose(*overrides))
    assert name == expected and why in reason


def test_auto_picks_multi_worker_for_a_cluster_tf_config(monkeypatch):
    from scaleflow import registry
    from scaleflow.strategies.auto import resolve

    if "multi_worker" not in registry.names("strategy"):
        pytest.skip("strategy=multi_worker is not registered")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}')
    assert resolve(compose()) == ("multi_worker", "TF_CONFIG describes a cluster of 2 workers")


def test_a_strategy_implies_its_hardware_only_when_not_chosen():
    from scaleflow.config.implied import implied_overrides

    assert implied_overrides(["strategy=tpu"]) == ["hardware=tpu", "trainer.mixed_precision=bf16"]
    assert implied_overrides(["strategy=tpu", "hardware=cpu", "trainer.mixed_precision=off"]) == []
    assert implied_overrides(["strategy=tpu,default"]) == []  # a sweep implies nothing
    assert implied_overrides(["strategy=mirrored"]) == []


def test_cluster_target_composes_and_validates():
    cfg = compose("hardware=cluster", "hardware.hosts=[a,b]", "hardware.devices_per_host=2")
    assert cfg.hardware.name == "cluster" and list(cfg.hardware.hosts) == ["a", "b"]
    with pytest.raises(ConfigError, match="hardware.devices_per_host"):
        compose("hardware=cluster", "hardware.devices_per_host=0")
