"""Training controls: learning-rate schedules with warmup, gradient clipping, early stopping and
keep_best; their state survives `kill -9`, so a resumed run stops at the same epoch and exports the
same best weights as an uninterrupted one. Bad settings are config errors before TensorFlow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import compose
from scaleflow.errors import ConfigError
from scaleflow.training.schedules import learning_rate_at


@pytest.mark.parametrize("overrides, key, expect", [
    (["trainer.keep_best=true", "data.validation_split=0"], "trainer.keep_best", "no validation data"),
    (["trainer.early_stopping.enabled=true", "trainer.early_stopping.monitor=val_acc"],
     "trainer.early_stopping.monitor", "Did you mean 'val_accuracy'?"),
    (["trainer.early_stopping.enabled=true", "data.validation_split=0"], "trainer.early_stopping.monitor",
     "no val_ metrics"),
    (["task=regression", "trainer.keep_best=true", "trainer.early_stopping.monitor=val_accuracy"],
     "trainer.early_stopping.monitor", "val_r2_score"),
    (["trainer.clip_norm=1", "trainer.clip_value=0.5"], "trainer.clip_value", "trainer.clip_norm"),
    (["trainer.lr_schedule.name=cosin"], "trainer.lr_schedule.name", "Did you mean 'cosine'?"),
    (["trainer.lr_schedule.warmup_epochs=5", "trainer.epochs=5"], "trainer.lr_schedule.warmup_epochs", "fewer"),
])
def test_bad_controls_name_key_value_and_allowed(overrides, key, expect):
    with pytest.raises(ConfigError) as info:
        compose(*overrides)
    assert str(info.value).startswith(key) and expect in str(info.value), str(info.value)


@pytest.mark.parametrize("name", ["constant", "cosine", "exponential", "step"])
def test_schedules_follow_their_formula_after_a_linear_warmup(tf, name):
    from scaleflow.training.schedules import make_schedule

    cfg = compose(f"trainer.lr_schedule.name={name}", "trainer.lr_schedule.warmup_epochs=1", "trainer.epochs=4",
                  "trainer.learning_rate=0.1", "trainer.lr_schedule.decay_epochs=1", "trainer.lr_schedule.min_lr=0.01")
    schedule = make_schedule(cfg.trainer, steps_per_epoch=10)
    s = cfg.trainer.lr_schedule
    expected = [learning_rate_at(step, 0.1, name, 10, 40, 10.0, s.decay_rate, s.min_lr) for step in range(40)]
    got = [float(schedule(step)) for step in range(40)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[0] == pytest.approx(0.01) and got[9] == pytest.approx(0.1)  # warmup reaches the base rate
    if name == "cosine":
        assert got[-1] == pytest.approx(0.01 + 0.09 * 0.5 * (1 + np.cos(np.pi * 29 / 30)), rel=1e-5)
    if name == "step":
        assert got[10] == got[19] == pytest.approx(0.1) and got[20] == pytest.approx(0.05)


def test_clipping_reaches_the_optimizer(tf):
    from scaleflow.training.controls import optimizer_options
    from scaleflow.training.setup import make_optimizer

    norm = make_optimizer(compose("trainer.clip_norm=0.5").trainer,
                          optimizer_options(compose("trainer.clip_norm=0.5").trainer, 10))
    value = make_optimizer(compose("trainer.clip_value=0.1").trainer,
                           optimizer_options(compose("trainer.clip_value=0.1").trainer, 10))
    assert norm.global_clipnorm == 0.5 and value.clipvalue == 0.1


# ------------------------------------------------------------------- kill -9 and resume (slow)
CONTROLS = ["data.num_examples=8000", "model.hidden_units=[128,128]", "trainer.steps_per_execution=1",
            "trainer.epochs=40", "trainer.learning_rate=0.003", "trainer.early_stopping.enabled=true",
            "trainer.early_stopping.monitor=val_accuracy", "trainer.early_stopping.patience=3",
            "trainer.early_stopping.min_delta=0.003", "trainer.keep_best=true", "trainer.verbose=quiet"]


@pytest.mark.integration
@pytest.mark.slow
def test_kill_9_during_patience_then_resume_stops_and_exports_like_an_uninterrupted_run(train, tf, tmp_path):
    reference = train(*CONTROLS, run_dir=tmp_path / "reference")
    ref = reference["training_controls"]
    assert ref["stopped_epoch"] and ref["stopped_epoch"] < 40 and ref["exported_epoch"] == ref["best_epoch"]
    assert ref["best_epoch"] < ref["stopped_epoch"]

    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "scaleflow", f"hydra.run.dir={run_dir}", *CONTROLS]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    state_file = run_dir / "backup" / "worker-0" / "training_controls.json"
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline, killed_at = time.time() + 240, None
    while time.time() < deadline and first.poll() is None:
        try:
            states = json.loads(state_file.read_text())["epochs"]
            last = states[max(states, key=int)]
        except (OSError, ValueError, KeyError):
            last = None
        if last and last["wait"] >= 1 and last["stopped_epoch"] is None:  # mid-patience: the state matters
            killed_at = last["epochs_completed"]
            break
        time.sleep(0.01)
    assert first.poll() is None and killed_at, "the run ended before it could be killed mid-patience"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["resumed_from_epoch"] and resumed["resumed_from_epoch"] <= killed_at
    got = resumed["training_controls"]
    for key in ("stopped_epoch", "best_epoch", "exported_epoch", "epochs_completed"):
        assert got[key] == ref[key], (key, got, ref)
    assert got["best"] == pytest.approx(ref["best"], abs=1e-6)

    x = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
    loaded = [tf.saved_model.load(r["export"]["path"]) for r in (reference, resumed)]  # keep them alive
    np.testing.assert_allclose(loaded[0].serve(tf.constant(x)).numpy(), loaded[1].serve(tf.constant(x)).numpy(),
                               atol=1e-5)
