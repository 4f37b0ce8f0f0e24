"""mode=plan predicts a run from its config alone, without TensorFlow; run.json compares the
prediction with the measured step time; mode=calibrate measures this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import QUICK, cli, compose

NO_TF_RUNNER = """
import atexit, runpy, sys
atexit.register(lambda: print("TENSORFLOW_IMPORTED" if "tensorflow" in sys.modules else "NO_TENSORFLOW"))
sys.argv = ["scaleflow"] + sys.argv[1:]
runpy.run_module("scaleflow", run_name="__main__")
"""


def test_plan_writes_plan_json_without_importing_tensorflow(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_TF_RUNNER, "mode=plan", "strategy=mirrored",
                             "hardware.logical_devices=2", f"hydra.run.dir={tmp_path}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "NO_TENSORFLOW" in result.stdout
    assert "recommend: strategy=" in result.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    topo = plan["topology"]
    assert (topo["hosts"], topo["workers"], topo["replicas"], topo["pipelines"]) == (1, 1, 2, 1)
    assert topo["per_replica_batch"] == 32 and topo["global_batch"] == 64
    assert sum(topo["input"]["train"]["records"]) > 0
    for name, formula in {"P": "N / B", "Q": "M / T", "C": "D x L / (B x W)", "L": "T / N"}.items():
        q = plan["quantities"][name]
        assert q["formula"] == formula and q["inputs"] and q["meaning"] and q["value"] is not None
    assert plan["quantities"]["P"]["value"] == pytest.approx(2 / 64)
    assert [row["replicas"] for row in plan["scaling"]] == [1, 2]
    assert plan["scaling"][0]["efficiency_fixed_global"] == 1.0
    assert plan["memory_per_replica"]["total_bytes"] > 0
    assert plan["recommendation"]["strategy"] in ("default", "mirrored") and plan["recommendation"]["reason"]


def test_ring_allreduce_cost_follows_the_formula():
    from scaleflow.planning.cost_model import ring_allreduce_s

    assert ring_allreduce_s(1, 1e6, 1e9, 1e-5) == 0.0
    assert ring_allreduce_s(4, 1e6, 1e9, 1e-5) == pytest.approx(2 * 3 / 4 * 1e6 / 1e9 + 2 * 3 * 1e-5)


def test_step_time_is_compute_plus_allreduce_plus_optimizer_update_plus_overhead():
    from scaleflow.planning.cost_model import Workload, step_time
    from scaleflow.planning.topology import figures, layout

    cfg = compose("strategy=mirrored", "hardware.logical_devices=2", "hardware.peak_flops=1e9",
                  "hardware.step_overhead_s=0.001", "hardware.bandwidth_bytes_s=1e8", "hardware.latency_s=1e-5")
    figs = figures(cfg)
    st = step_time(Workload(1000.0, 500, 64, 10.0), figs, layout(cfg, figs))
    # two logical devices share the CPU's FLOP/s: each runs 32 examples at 0.5 GFLOP/s
    assert st.compute_s == pytest.approx(3 * 1000 * 32 / 0.5e9)
    assert st.allreduce_s == pytest.approx(2 * 1 / 2 * 500 * 4 / 1e8 + 2 * 1e-5)
    assert st.overhead_s == pytest.approx(2 * 0.001)  # each replica pays it on the shared CPU
    # each replica updates its own copy of the 500 parameters, streaming ~40 bytes each (Adam)
    assert st.update_s == pytest.approx(2 * 500 * 40 / 2.8e10)
    assert st.total_s == pytest.approx(st.compute_s + st.allreduce_s + st.update_s + st.overhead_s)
    sgd = step_time(Workload(1000.0, 500, 64, 10.0, optimizer="sgd"), figs, layout(cfg, figs))
    assert sgd.update_s == pytest.approx(st.update_s * 6 / 40)  # no slots: far less to stream


def test_tpu_topology_plans_one_input_pipeline_per_host(tmp_path):
    from scaleflow.planning.report import build

    plan = build(compose("mode=plan", "strategy=tpu", "hardware.topology=v4-32", "data.shard=hash",
                         "data.batch_size=256"))
    topo = plan["topology"]
    assert (topo["replicas"], topo["hosts"], topo["pipelines"]) == (16, 4, 4)
    assert len(topo["input"]["train"]["records"]) == 4
    assert plan["hardware"]["precision"] == "bfloat16" and plan["hardware"]["peak_flops"] == 275e12
    assert plan["recommendation"]["strategy"] == "tpu"
    assert plan["recommendation"]["batch_size"] % (8 * 16) == 0  # multiples of 8 per TPU replica


def test_plan_plot_saves_the_scaling_curve(tmp_path):
    from scaleflow.modes.plan import run

    plan = run(compose("mode=plan", "hardware=cluster", "hardware.hosts=[a,b]", "hardware.devices_per_host=4",
                       "plan.plot=true"), str(tmp_path))
    png = tmp_path / "plan_scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [row["replicas"] for row in plan["scaling"]] == list(range(1, 9))
    assert json.loads((tmp_path / "plan.json").read_text())["plot"] == str(png)


def test_a_calibration_profile_overrides_the_figures(tmp_path):
    from scaleflow.planning.topology import figures

    profile = tmp_path / "profile.yaml"
    profile.write_text("defaults:\n  - /schema/hardware/cpu@_here_\n  - _self_\nname: cpu\n"
                       "peak_flops: 1.5e10\nstep_overhead_s: 0.002\n")
    figs = figures(compose("mode=plan", f"plan.profile={profile}"))
    assert (figs.peak_flops, figs.step_overhead_s) == (1.5e10, 0.002) and "calibration profile" in figs.source
    result = cli("mode=plan", "plan.profile=/nonexistent.yaml", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode == 2 and "plan.profile" in result.stderr and "Traceback" not in result.stderr


def test_run_json_records_predicted_and_measured_step_time(train):
    run = train(*QUICK, "export=none")
    st = run["step_time"]
    assert st["predicted_step_time_s"] > 0 and st["measured_step_time_s"] > 0
    assert st["ratio"] == pytest.approx(st["measured_step_time_s"] / st["predicted_step_time_s"], rel=1e-3)
    memory = st["predicted_memory_per_device"]  # one replicated device: every byte of the model
    assert memory["ratio_vs_replicated"] == 1.0 and memory["fits"] and memory["total_bytes"] > memory["parameters_bytes"]


def test_socket_ring_allreduce_between_two_processes_measures_the_link():
    from scaleflow.planning.calibration import measure_allreduce

    link = measure_allreduce(large_bytes=1 << 20, repeats=3)
    assert link["latency_s"] > 0 and link["bandwidth_bytes_s"] > 0


@pytest.mark.slow
def test_calibrate_writes_a_profile_the_planner_uses(tmp_path):
    result = cli("mode=calibrate", f"hydra.run.dir={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr
    profile = tmp_path / "hardware_profile.yaml"
    assert "peak_flops" in profile.read_text()
    plan = cli("mode=plan", f"plan.profile={profile}", f"hydra.run.dir={tmp_path / 'plan'}", timeout=60, check=True)
    assert "calibration profile" in plan.stdout
