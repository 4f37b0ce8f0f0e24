"""strategy=tpu: the real no-TPU failure path (unmocked, in subprocesses), the fallback, and the
success path with TPUClusterResolver / TPUStrategy replaced by fakes that record what they get."""

from __future__ import annotations

import os

import pytest

from conftest import QUICK, cli, compose


def test_strategy_tpu_selects_hardware_tpu_and_bf16_visibly():
    result = cli("--cfg", "job", "strategy=tpu", "data.shard=hash", check=True, timeout=60)
    hardware = result.stdout.split("hardware:")[1].split("\n")[1]
    assert hardware.strip() == "name: tpu"
    assert "mixed_precision: bf16" in result.stdout
    cfg = compose("strategy=tpu")
    assert cfg.hardware.name == "tpu" and cfg.hardware.topology == "v3-8" and cfg.hardware.precision == "bfloat16"


def test_an_explicit_hardware_choice_is_kept_and_checked():
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError, match="strategy.fallback=true"):
        compose("strategy=tpu", "hardware=cpu")
    assert compose("strategy=tpu", "hardware=cpu", "strategy.fallback=true").hardware.name == "cpu"
    assert compose("strategy=tpu", "trainer.mixed_precision=off").trainer.mixed_precision == "off"


@pytest.mark.parametrize("address", ["local", "grpc://127.0.0.1:1"])
def test_no_tpu_ends_with_a_clear_message_no_traceback(tmp_path, address):
    # Real TensorFlow, real TPUClusterResolver: nothing mocked. The timeout guards against a hang
    # (a dead grpc:// address blocks forever without GRPC_FAIL_FAST).
    result = cli("strategy=tpu", "data.shard=hash", f"hardware.tpu={address}", f"hydra.run.dir={tmp_path}",
                 timeout=60, env={"GRPC_FAIL_FAST": ""} if address == "local" else None)
    assert result.returncode not in (0, 2), result.stderr
    assert "no TPU found: looked for" in result.stderr
    assert ("TPU chips of this machine" if address == "local" else "TPU worker at grpc://127.0.0.1:1") in result.stderr
    assert "hardware.tpu=grpc://host:8470" in result.stderr and "strategy.fallback=true" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def fresh_tpu_connections(monkeypatch):
    from scaleflow.hardware import tpu

    monkeypatch.setattr(tpu, "_connections", {})
    return tpu


def test_fallback_trains_on_the_cpu_with_a_warning(train, fresh_tpu_connections, caplog):
    run = train("strategy=tpu", "strategy.fallback=true", *QUICK, "export=none")
    assert run["status"] == "ok"
    assert run["strategy"]["name"] == "default" and "no TPU" in run["strategy"]["fallback"]
    assert any("NOT on a TPU" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_success_path_passes_the_resolver_to_tpu_strategy(train, tf, fresh_tpu_connections, monkeypatch):
    calls: dict = {}

    class FakeResolver:
        def __init__(self, tpu=None, **kwargs):
            calls["resolver"] = {"tpu": tpu, **kwargs}
            calls["grpc_fail_fast"] = os.environ.get("GRPC_FAIL_FAST")

        def cluster_spec(self):
            return tf.train.ClusterSpec({"worker": ["10.1.2.3:8470"]})

    def fake_connect(resolver):
        calls["connect"] = resolver

    def fake_initialize(resolver):
        calls["initialize"] = resolver

    class FakeTPUStrategy(tf.distribute.MirroredStrategy):
        """A real strategy with 2 replicas stands in for the TPU cores, so the run really trains."""

        def __init__(self, resolver):
            calls["strategy"] = resolver
            super().__init__(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())

    monkeypatch.delenv("GRPC_FAIL_FAST", raising=False)
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", fake_connect)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", fake_initialize)
    monkeypatch.setattr(tf.distribute, "TPUStrategy", FakeTPUStrategy)

    run = train("strategy=tpu", "hardware.tpu=grpc://10.1.2.3:8470", "data.shard=hash", "data.shard_key=label",
                *QUICK, "export=none")
    assert calls["resolver"]["tpu"] == "grpc://10.1.2.3:8470"
    assert calls["grpc_fail_fast"] == "true"  # set before connecting, or a dead address hangs
    assert calls["connect"] is calls["initialize"] is calls["strategy"]
    assert isinstance(calls["strategy"], FakeResolver)
    assert run["status"] == "ok"
    assert run["strategy"]["name"] == "tpu" and run["strategy"]["num_replicas"] == 2
    assert run["strategy"]["num_pipelines"] == 1  # one input pipeline per TPU host
    assert run["config"]["trainer"]["mixed_precision"] == "bf16"
    assert run["data"]["train"]["steps"] >= 1
