"""Profiling answers "where does my step go": profile=tensorboard gives TensorBoard's Overview a step
time (checked through TensorBoard's own data endpoint), profile=summary says whether a job is
input-bound, profile.port starts TensorFlow's profiler server, and bad settings exit 2 naming the key."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from conftest import QUICK, cli, compose

# tensorboard_server: a real `tensorboard` on 127.0.0.1 (the fixture of test_tensorboard.py)
from test_tensorboard import get_json, tensorboard_server  # noqa: F401


# ------------------------------------------------------------------------------ config (no TF)
@pytest.mark.parametrize("override, allowed", [
    ("profile.batches=[5,2]", "start <= stop"),
    ("profile.batches=[0,3]", "1 <= start"),
    ("profile.batches=[3,40]", "stop <= 20"),
])
def test_a_window_outside_the_epoch_is_a_config_error_naming_the_key(override, allowed):
    from scaleflow.validation import validate
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        validate(compose("profile=tensorboard", "trainer.steps_per_epoch=20", override))
    assert e.value.key == "profile.batches" and allowed in str(e.value)


def test_horovod_s_timeline_with_another_strategy_is_a_config_error():
    from scaleflow.validation import validate
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        validate(compose("strategy=mirrored", "profile.timeline=true"))
    assert e.value.key == "profile.timeline" and "strategy=horovod" in str(e.value)


@pytest.mark.slow
def test_a_window_beyond_steps_per_epoch_exits_2_before_tensorflow(tmp_path):
    result = cli("profile=tensorboard", "trainer.steps_per_epoch=5", "profile.batches=[3,8]",
                 f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode == 2 and "profile.batches" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ the Keras contract relied on
def test_keras_runs_one_compiled_step_per_item_drawn_from_a_python_iterator(tf):
    """The version-guarded Keras 3.15 behaviour scaleflow/profiling/keras_steps.py relies on."""
    import keras

    from scaleflow.profiling import keras_steps

    assert keras_steps.supported("test")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=4)
    data = tf.data.Dataset.from_tensors((np.ones((8, 4), "float32"), np.ones((8, 1), "float32"))).repeat()
    model.make_train_function()
    began, ended = [], []
    draws = keras_steps.StepDraws(iter(data), 10, began.append, ended.append)
    logs = keras_steps.run_drawn(model.train_function, draws)
    assert int(model.optimizer.iterations) == 4 == draws.drawn  # the four steps of one call, no more
    assert began == ended == [10, 11, 12, 13] and "loss" in logs


# -------------------------------------------------------------------- profile=tensorboard
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("strategy", [[], ["strategy=mirrored", "hardware.logical_devices=2"]],
                         ids=["default", "mirrored"])
def test_tensorboard_overview_shows_a_step_time_and_no_missing_step_marker(train, tmp_path, tensorboard_server,
                                                                          strategy):
    # 56 steps per epoch: steps_per_execution must divide the epoch (hardware.base.steps_per_execution)
    run = train(*QUICK, "data.num_examples=4096", "trainer.steps_per_epoch=56", "trainer.steps_per_execution=8",
                "profile=tensorboard", "profile.batches=[10,12]", "export=none", *strategy)
    block = run["profile"]
    # the window ran one step per call (3 steps); the rest of the epoch ran 8 per call and was timed
    assert block["mode"] == "tensorboard" and block["step_markers"] and block["window_steps"] == 3
    assert block["steps_per_execution"] == 8 and block["full_speed_step_time_s"] > 0
    assert block["window_cost_s"] is not None and "error" not in block

    logdir = tmp_path / "run" / "tensorboard"
    xplanes = list(logdir.rglob("*.xplane.pb"))
    assert len(xplanes) == 1, xplanes
    host = xplanes[0].name[: -len(".xplane.pb")]
    base = tensorboard_server(logdir)
    deadline, runs = time.time() + 60, []
    while time.time() < deadline and not runs:
        runs = get_json(base + "/data/plugin/profile/runs")
        time.sleep(0.5)
    assert len(runs) == 1 and runs[0].startswith("train"), runs
    overview = get_json(f"{base}/data/plugin/profile/data?run={runs[0]}&tag=overview_page&host={host}")
    text = str(overview)
    assert "No step marker" not in text
    step_ms = _average_step_time_ms(overview)
    assert step_ms > 0, text[:2000]


def _average_step_time_ms(overview) -> float:
    """The Overview's 'Average Step Time' (steptime_ms_average) from the endpoint's DataTables."""
    tables = overview if isinstance(overview, list) else [overview]
    for table in tables:
        props = table.get("p", {}) if isinstance(table, dict) else {}
        for key in ("steptime_ms_average", "step_time_ms_average"):
            if key in props:
                return float(props[key])
    raise AssertionError(f"no average step time in the overview page: {str(overview)[:2000]}")


# ------------------------------------------------------------------------ profile=summary
def _slow_input(monkeypatch, seconds: float):
    """A deliberately input-bound job: every training batch waits `seconds` in a sequential map."""
    import tensorflow as tf

    from scaleflow.training import train as train_module

    real = train_module.input_fn

    def input_fn(*args, training, **kwargs):
        fn = real(*args, training=training, **kwargs)
        if not training:
            return fn

        def slow(x, y):
            waited = tf.numpy_function(lambda: (time.sleep(seconds), np.float32(0))[1], [], tf.float32)
            with tf.control_dependencies([waited]):
                return tf.identity(x), tf.identity(y)

        return lambda ctx: fn(ctx).map(slow)

    monkeypatch.setattr(train_module, "input_fn", input_fn)


def test_summary_calls_a_job_with_a_slow_map_input_bound(train, monkeypatch, caplog):
    _slow_input(monkeypatch, 0.02)
    caplog.set_level("INFO", logger="scaleflow")
    run = train(*QUICK, "trainer.steps_per_execution=4", "profile=summary", "profile.sample_every=1",
                "export=none")
    block = run["profile"]
    assert block["mode"] == "summary" and block["sampled_steps"] > 0
    assert block["input_wait_fraction"] > 0.5, block
    assert block["verdict"].startswith("input-bound:") and "data.cache" in block["verdict"]
    assert any(r.getMessage().startswith("profile: input-bound:") for r in caplog.records)
    assert len(block["per_epoch"]) == 2 and block["collectives"].startswith("not reported")
    # Where the step goes (one process: no all-reduce; every call sampled: no full-speed step to split).
    parts = block["step_parts"]
    assert parts["compute_s"] > 0 and parts["allreduce_s"] is None and parts["input_s"] > 0.01, parts
    assert parts["step_s"] is None and parts["overhead_s"] is None, parts


def test_summary_calls_a_job_without_input_delay_compute_bound(train, tmp_path):
    # big steps on few, ready batches: the step, not the input, is the cost
    run = train(*QUICK, "data.num_examples=2048", "data.batch_size=256", "model.hidden_units=[1024,1024]",
                "trainer.steps_per_execution=2", "profile=summary", "profile.sample_every=2", "export=none")
    block = run["profile"]
    assert block["input_wait_fraction"] < 0.15 and block["verdict"].startswith("compute-bound:"), block
    # per-epoch scalars in the `train` run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    assert {"profile/input_wait_fraction", "profile/step_time_ms"} <= set(tags), tags
    assert len(events.Tensors("profile/input_wait_fraction")) == 2  # one per epoch
    assert block["full_speed_step_time_s"] > 0 and block["sampled_steps"] > 0
    # Where the full-speed step goes: compute + input + overhead add up to it (one process: no all-reduce).
    parts = block["step_parts"]
    assert parts["compute_s"] > 0 and parts["allreduce_s"] is None, parts
    assert parts["step_s"] == pytest.approx(block["full_speed_step_time_s"])
    assert parts["overhead_s"] == 0 or \
        parts["compute_s"] + parts["input_s"] + parts["overhead_s"] == pytest.approx(parts["step_s"]), parts


# --------------------------------------------------------------------------- profile.port
def test_profile_port_in_use_is_a_config_error_naming_the_key():
    from scaleflow.errors import ConfigError
    from scaleflow.profiling.server import check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as e:
            check_port_free(port)
    assert e.value.key == "profile.port" and "in use" in str(e.value)


@pytest.mark.slow
def test_a_profile_port_in_use_exits_2_before_tensorflow(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(f"profile.port={port}", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode == 2 and "profile.port" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_profile_port_starts_the_profiler_server_for_capture_profile(train, caplog):
    port = _free_port()
    caplog.set_level("WARNING", logger="scaleflow")
    train(*QUICK, "trainer.epochs=1", f"profile.port={port}", "export=none")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # TensorFlow's profiler server answers (it lives as long as the process)
    assert any("ALL interfaces" in r.getMessage() for r in caplog.records)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_summary_under_mirrored_measures_every_replica_s_step(train):
    run = train(*QUICK, "strategy=mirrored", "hardware.logical_devices=2", "trainer.steps_per_execution=4",
                "profile=summary", "profile.sample_every=2", "export=none")
    block = run["profile"]
    assert run["strategy"]["num_replicas"] == 2 and block["sampled_steps"] > 0
    assert block["input_wait_fraction"] is not None and block["collectives"] == "not reported by strategy mirrored"


@pytest.mark.integration
@pytest.mark.slow
def test_multi_worker_writes_one_profile_per_worker_each_its_own_run(tmp_path, tensorboard_server):
    result = cli(*QUICK, "data.num_examples=4096", "strategy=multi_worker", "strategy.num_workers=2",
                 "profile=tensorboard", "profile.batches=[3,5]", "export=none", f"hydra.run.dir={tmp_path}",
                 timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    logdir = tmp_path / "tensorboard"
    for worker in (0, 1):
        assert list((logdir / f"worker-{worker}" / "train").rglob("*.xplane.pb")), f"worker {worker}: no profile"
    base = tensorboard_server(logdir)
    deadline, runs = time.time() + 60, []
    while time.time() < deadline and len(runs) < 2:
        runs = get_json(base + "/data/plugin/profile/runs")
        time.sleep(0.5)
    assert sorted(r.split("/")[0] for r in runs) == ["worker-0", "worker-1"], runs
    hosts = {r: [h["hostname"] if isinstance(h, dict) else h for h in
                 get_json(f"{base}/data/plugin/profile/hosts?run={r}&tag=overview_page")] for r in runs}
    for r, names in hosts.items():
        overview = get_json(f"{base}/data/plugin/profile/data?run={r}&tag=overview_page&host={names[0]}")
        assert "No step marker" not in str(overview) and _average_step_time_ms(overview) > 0, r


def _horovod_missing() -> str | None:
    try:
        from scaleflow_horovod import install

        install.check()
    except Exception as e:  # noqa: BLE001 - the reason is the skip message
        return str(e)
    return None


@pytest.mark.slow
def test_horovod_profiles_every_rank_and_writes_horovod_s_timeline(tmp_path):
    missing = _horovod_missing()
    if missing:
        pytest.skip(f"no usable Horovod: {missing}")
    result = cli(*QUICK, "data.num_examples=4096", "strategy=horovod", "strategy.num_workers=2",
                 "profile=tensorboard", "profile.batches=[3,5]", "profile.timeline=true", "export=none",
                 f"hydra.run.dir={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert list((tmp_path / "tensorboard" / f"worker-{rank}" / "train").rglob("*.xplane.pb")), rank
    timeline = tmp_path / "tensorboard" / "horovod_timeline.json"
    assert timeline.stat().st_size > 0 and "allreduce" in timeline.read_text().lower()
