"""`mode=plan`: a run's topology, cost, scaling and a recommendation, from its config alone.

Nothing here imports TensorFlow: the dataset describes itself and plans its shards in NumPy
(`plan_input`), the model plugin states its FLOPs and parameters, the hardware states its figures.
"""

from __future__ import annotations

import dataclasses
import math

from scaleflow import registry
from scaleflow.data import service_config
from scaleflow.data.planning import plan_input
from scaleflow.errors import ScaleflowError
from scaleflow import tasks
from scaleflow.planning.cost_model import Workload, links, memory_per_replica, step_time
from scaleflow.planning.parallel import check_devices, place, plan_parallelism, recommend_parallelism, variables
from scaleflow.planning.quantities import quantities
from scaleflow.planning.topology import Figures, Layout, figures, layout, with_replicas

COMPUTE_TARGET = 0.8  # recommend a batch whose step is at least this much compute


def workload(cfg, info) -> tuple[Workload, dict]:
    spec = tasks.get(cfg).input_spec(info)
    model = registry.get("model", cfg.model.name)()
    flops, params = model.flops_per_example(cfg.model, spec), model.num_parameters(cfg.model, spec)
    if flops is None or params is None:
        raise ScaleflowError(f"model={cfg.model.name} does not state flops_per_example/num_parameters, which "
                             "the planner needs (see scaleflow/models/base.py)")
    activations = model.activations_per_example(cfg.model, spec)
    note = "from the model plugin"
    if activations is None:
        activations = 2 * math.sqrt(flops / 2)
        note = "estimate 2 x sqrt(FLOPs/2) (exact for equal-width dense layers)"
    tensors = model.num_gradient_tensors(cfg.model, spec) or 1
    shapes = model.variable_shapes(cfg.model, spec) or {"all": (int(params),)}
    largest = max(math.prod(shape) for shape in shapes.values())
    work = Workload(float(flops), int(params), int(cfg.data.batch_size), float(activations), cfg.trainer.optimizer,
                    int(tensors), int(largest))
    return work, {"flops_per_example": flops, "parameters": params, "activations_per_example": activations,
                  "activations_note": note, "gradient_tensors": tensors}


def parallel_plan(cfg, figs: Figures, lay: Layout, work: Workload, info) -> dict:
    """The split the strategy states (`Strategy.parallelism`) planned on the model's variables:
    layout, memory per device, collectives, pipeline bubble and step time (planning/parallel.py).
    Raises ConfigError when the split does not match the devices or the layout does not fit the model."""
    strategy = registry.get("strategy", lay.strategy)
    p = strategy.parallelism(cfg, figs)
    check_devices(cfg, figs, p, lay.workers)
    spec = tasks.get(cfg).input_spec(info)
    model = registry.get("model", cfg.model.name)()
    shapes, defaults = variables(model, cfg.model, spec), model.layout_rules(cfg.model, spec)
    cut_points, segments = model.cut_points(cfg.model), model.cut_segments(cfg.model, spec)
    result = plan_parallelism(work, figs, p, place(shapes, defaults, p), multi_process=lay.workers > 1 or lay.hosts > 1,
                              backend=strategy.backend, cut_points=cut_points, segments=segments)
    return {"parallelism": p, "shapes": shapes, "defaults": defaults, "cut_points": cut_points,
            "segments": segments, **result}


def is_data_parallel(p) -> bool:
    return p.model == 1 and p.stages == 1


def predicted_step(cfg, figs: Figures, lay: Layout, work: Workload, info) -> tuple[dict, dict]:
    """The step the run will take, as `StepTime.report()`/`ParallelStep.report()` give it (with total_s):
    the data-parallel cost model, or the model/pipeline one when the strategy splits the model; and
    the memory per device under the strategy's split (`plan_parallelism`'s memory_per_device)."""
    par = parallel_plan(cfg, figs, lay, work, info)
    step = par["step"] if not is_data_parallel(par["parallelism"]) else step_time(work, figs, lay).report()
    return step, par["memory_per_device"]


def scaling(cfg, work: Workload, figs: Figures, base: Layout, max_replicas: int) -> list[dict]:
    """Predicted efficiency for 1..max_replicas replicas of this strategy on this hardware, at a
    fixed global batch (strong scaling) and at a fixed per-replica batch (weak scaling)."""
    counts = list(range(1, max_replicas + 1)) if max_replicas <= 32 else \
        sorted({2**i for i in range(int(math.log2(max_replicas)) + 1)} | {max_replicas})
    per_replica = work.global_batch / base.replicas
    one = with_replicas(base, 1, figs, cfg)
    strong_1 = step_time(work, figs, one).total_s
    weak_1 = step_time(work, figs, one, global_batch=per_replica).total_s
    rows = []
    for r in counts:
        lay = with_replicas(base, r, figs, cfg)
        row = {"replicas": r, "hosts": lay.hosts}
        if work.global_batch >= r:
            s = step_time(work, figs, lay).total_s
            row.update(step_s_fixed_global=float(f"{s:.6g}"), efficiency_fixed_global=round(strong_1 / (r * s), 4))
        w = step_time(work, figs, lay, global_batch=per_replica * r).total_s
        row.update(step_s_fixed_per_replica=float(f"{w:.6g}"), efficiency_fixed_per_replica=round(weak_1 / w, 4))
        rows.append(row)
    return rows


def parallel_scaling(work: Workload, figs: Figures, lay: Layout, par: dict, max_replicas: int) -> list[dict]:
    """`scaling` for a split model: the data axis grows (1..max_replicas replicas), each replica
    keeping the strategy's model axis and stages; a host holds as many devices as they need."""
    split = par["parallelism"]
    per = split.model * split.stages
    counts = list(range(1, max_replicas + 1)) if max_replicas <= 32 else \
        sorted({2**i for i in range(int(math.log2(max_replicas)) + 1)} | {max_replicas})
    per_replica = work.global_batch / split.data
    backend = registry.get("strategy", lay.strategy).backend

    def step(r: int, batch: float) -> float | None:
        p = dataclasses.replace(split, data=r)
        hw = figs
        if figs.single_host and p.devices > figs.devices_per_host:
            hw = dataclasses.replace(figs, devices_per_host=p.devices)
        try:
            placements = place(par["shapes"], par["defaults"], p)
        except ScaleflowError:
            return None  # a rule on the data axis that r does not divide
        return plan_parallelism(work, hw, p, placements, multi_process=lay.workers > 1 or lay.hosts > 1,
                                cut_points=par.get("cut_points"), segments=par.get("segments"),
                                global_batch=batch, backend=backend)["step"]["total_s"]

    strong_1, weak_1 = step(1, work.global_batch), step(1, per_replica)
    rows = []
    for r in counts:
        row = {"replicas": r, "devices": r * per, "hosts": lay.hosts}
        s = step(r, work.global_batch) if work.global_batch >= r else None
        if s:
            row.update(step_s_fixed_global=float(f"{s:.6g}"), efficiency_fixed_global=round(strong_1 / (r * s), 4))
        w = step(r, per_replica * r)
        if w is None:
            continue
        row.update(step_s_fixed_per_replica=float(f"{w:.6g}"), efficiency_fixed_per_replica=round(weak_1 / w, 4))
        rows.append(row)
    return rows


def candidates(cfg, figs: Figures) -> list[str]:
    """The registered strategies that say they suit this hardware (`Strategy.suits`)."""
    return [name for name in registry.names("strategy") if registry.get("strategy", name).suits(cfg, figs)]


def recommend(cfg, work: Workload, figs: Figures, train_records: int) -> dict:
    options = {}
    for name in candidates(cfg, figs):
        try:
            split = registry.get("strategy", name).parallelism(cfg, figs)
        except (ScaleflowError, AttributeError, KeyError, TypeError, ValueError):
            continue  # it needs keys of its own config node: not a candidate for this config
        if not is_data_parallel(split):
            continue  # model and pipeline splits: compared by recommend_parallelism
        lay = layout(cfg, figs, name)
        if work.global_batch % lay.replicas:
            continue
        st = step_time(work, figs, lay)
        options[name] = {"replicas": lay.replicas, "examples_per_s": float(f"{work.global_batch / st.total_s:.6g}"),
                         "dominant": st.dominant}
    if not options:
        return {"strategy": None, "reason": "no registered strategy fits this hardware and batch size"}
    best = max(options, key=lambda k: options[k]["examples_per_s"])
    lay = layout(cfg, figs, best)
    st = step_time(work, figs, lay)
    shares = {"compute": st.compute_s / st.total_s, "all-reduce": st.allreduce_s / st.total_s,
              "overhead": st.overhead_s / st.total_s}
    share_text = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
    others = ", ".join(f"{k} {v['examples_per_s']:.4g}" for k, v in options.items() if k != best)
    reason = (f"{best} predicts the highest throughput ({options[best]['examples_per_s']:.4g} examples/s"
              + (f"; {others}" if others else "") + f"); its step is {share_text}: {st.dominant} dominates")

    # Batch: the smallest power-of-two per-replica batch whose step is >= COMPUTE_TARGET compute,
    # within device memory and the training records (at least one step per epoch).
    multiple = figs.batch_multiple
    per_replica, why = None, ""
    limit = max(1, train_records // lay.replicas)
    b = multiple
    while b <= min(limit, 1 << 16):
        s = step_time(work, figs, lay, global_batch=b * lay.replicas)
        mem = memory_per_replica(work, figs, b)["total_bytes"]
        if figs.memory_bytes and mem > 0.9 * figs.memory_bytes:
            why = f"device memory stops it at per-replica batch {b // 2}" if per_replica else \
                "the model does not fit one device at any batch: split it (recommend: parallelism)"
            break
        per_replica = b
        if s.compute_s / s.total_s >= COMPUTE_TARGET:
            why = f"the smallest power of two where compute is >= {COMPUTE_TARGET:.0%} of the step"
            break
        b *= 2
    else:
        why = (f"compute stays under {COMPUTE_TARGET:.0%} of the step up to the largest batch the data allows "
               f"({limit} records per replica): {st.dominant} dominates; larger batches only amortise it")
    if per_replica is None and not why.startswith("the model does not fit"):
        per_replica = multiple  # the data are fewer than one per-replica batch
    return {"strategy": best, "replicas": lay.replicas, "reason": reason, "options": options,
            "per_replica_batch": per_replica, "batch_size": per_replica and per_replica * lay.replicas,
            "batch_reason": why}


def build(cfg) -> dict:
    """The whole plan for `cfg` (validated: plan.max_replicas >= 0 by its schema), as plan.json holds it."""
    figs = figures(cfg)
    lay = layout(cfg, figs)
    dataset = tasks.dataset_for(cfg)
    info = dataset.describe(cfg.data)
    inputs = plan_input(dataset, cfg.data, info, lay.pipelines)
    work, model_facts = workload(cfg, info)
    steps = cfg.trainer.steps_per_epoch or inputs.train.steps
    st = step_time(work, figs, lay)
    par = parallel_plan(cfg, figs, lay, work, info)
    split = par["parallelism"]
    step = st.report() if is_data_parallel(split) else par["step"]
    train_time = cfg.trainer.epochs * steps * step["total_s"]
    bandwidth, latency = links(figs, lay)
    example_bytes = 4 * math.prod(info.input_shape)
    train_records = int(sum(len(s) for s in inputs.train.shards))
    max_replicas = cfg.plan.max_replicas or max(lay.replicas, figs.devices)
    return {
        "config": {"strategy": cfg.strategy.name, "hardware": cfg.hardware.name, "model": cfg.model.name,
                   "data": cfg.data.name, "batch_size": cfg.data.batch_size, "epochs": cfg.trainer.epochs},
        "hardware": {**{k: getattr(figs, k) for k in figs.__dataclass_fields__}, "devices": figs.devices},
        "topology": {**lay.report(), "replicas_per_host": lay.replicas_per_host,
                     "per_replica_batch": cfg.data.batch_size / lay.replicas, "global_batch": cfg.data.batch_size,
                     "steps_per_epoch": steps, "input": {**inputs.report(), "shard": cfg.data.shard,
                                                         "shard_key": cfg.data.shard_key,
                                                         "where": service_config.describe(cfg, lay.pipelines)}},
        "model": model_facts,
        "step": step,
        "predicted": {"step_time_s": step["total_s"], "train_time_s": float(f"{train_time:.6g}"),
                      "examples_per_s": float(f"{cfg.data.batch_size / step['total_s']:.6g}")},
        "quantities": quantities(nodes=lay.replicas, batch=cfg.data.batch_size, parameters=work.parameters,
                                 train_time_s=train_time, data_bytes=train_records * example_bytes,
                                 latency_s=latency, bandwidth_bytes_s=bandwidth),
        "memory_per_replica": memory_per_replica(work, figs, cfg.data.batch_size / lay.replicas),
        "scaling": scaling(cfg, work, figs, lay, max_replicas) if is_data_parallel(split) else
        parallel_scaling(work, figs, lay, par, cfg.plan.max_replicas or
                         max(2, split.data, figs.devices // (split.model * split.stages))),
        "parallelism": {**split.report(), **{k: par[k] for k in ("memory_per_device", "communication", "step",
                                                                  "per_stage", "placements")}},
        "recommendation": {**recommend(cfg, work, figs, train_records),
                           "parallelism": recommend_parallelism(
                               work, figs, par["shapes"], par["defaults"],
                               {name: registry.get("strategy", name) for name in registry.names("strategy")},
                               configured_fits=par["memory_per_device"]["fits"], cut_points=par["cut_points"],
                               segments=par["segments"])},
    }


def _si(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def render(plan: dict) -> str:
    """The plan as the text `mode=plan` prints."""
    t, h, s, p, r = plan["topology"], plan["hardware"], plan["step"], plan["predicted"], plan["recommendation"]
    inp = t["input"]
    lines = [
        f"plan: strategy={t['strategy']} ({t['reason']}) on hardware={h['hardware']} [{h['source']}]",
        f"topology: {t['hosts']} host(s), {t['workers']} worker process(es), {t['replicas']} replica(s) "
        f"({t['replicas_per_host']}/host), global batch {t['global_batch']} = {t['per_replica_batch']:g}/replica, "
        f"{t['steps_per_epoch']} steps/epoch",
        f"input: {t['pipelines']} pipeline(s), data.shard={inp['shard']}"
        + (f" by {inp['shard_key']}" if inp.get("shard_key") else "") + f", {inp['num_examples']} records",
    ]
    if inp.get("where"):
        lines.append("  " + service_config.render(inp["where"]))
    for i, n in enumerate(inp["train"].get("records", [])):
        lines.append(f"  pipeline {i}: {n} training records, {inp['train']['steps']} steps of "
                     f"{inp['train']['batch_per_pipeline']}")
    m = plan["model"]
    lines += [
        f"model: {_si(m['parameters'])} parameters, {_si(m['flops_per_example'], 'FLOP')}/example forward",
        f"step: {s['total_s'] * 1e3:.4g} ms = " + " + ".join(
            f"{name} {s[key] * 1e3:.4g}" for key, name in STEP_TERMS if key in s and (s[key] or key == "compute_s"))
        + f" ms ({s['dominant']} dominates); {_si(p['examples_per_s'])} examples/s; training {p['train_time_s']:.4g} s",
        *render_parallelism(plan["parallelism"]),
        "quantities:",
    ]
    for name, q in plan["quantities"].items():
        inputs = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in q["inputs"].items())
        lines.append(f"  {name} = {q['formula']} = {q['value']:.4g}  ({inputs}): {q['meaning']}")
    lines.append("scaling (predicted efficiency at fixed global batch | fixed per-replica batch)"
                 + (f", replicas of {plan['parallelism']['model'] * plan['parallelism']['stages']} device(s):"
                    if plan["parallelism"]["devices"] > plan["parallelism"]["data"] else ":"))
    for row in plan["scaling"]:
        strong = row.get("efficiency_fixed_global")
        lines.append(f"  {row['replicas']:>5} replicas: {'-' if strong is None else f'{strong:.0%}':>5} | "
                     f"{row['efficiency_fixed_per_replica']:.0%}")
    lines += [f"recommend: strategy={r['strategy']}: {r['reason']}",
              f"recommend: data.batch_size={r.get('batch_size')} ({r.get('per_replica_batch')}/replica): "
              f"{r.get('batch_reason')}" if r.get("batch_size") else f"recommend: data.batch_size: {r.get('batch_reason')}"]
    lines += render_recommendation(r["parallelism"])
    return "\n".join(lines)


STEP_TERMS = (("compute_s", "compute"), ("allreduce_s", "all-reduce"), ("model_axis_s", "model-axis collectives"),
              ("pipeline_send_s", "pipeline sends"), ("bubble_s", "bubble"), ("data_axis_s", "data-axis all-reduce"),
              ("overhead_s", "overhead"))


def render_parallelism(par: dict) -> list[str]:
    """The split (mesh, stages), its layout, memory per device and collectives per step."""
    m, c = par["memory_per_device"], par["communication"]
    placements = par["placements"]
    split = [f"{path} {tuple(v['axes'])} [{v['source']}]" for path, v in placements.items() if v["shards"] > 1]
    shown = ", ".join(split[:4]) + (f", ... ({len(split) - 4} more)" if len(split) > 4 else "")
    lines = [f"parallelism: mesh {par['data']} x {par['model']} (batch x model), {par['stages']} stage(s), "
             f"{par['micro_batches']} micro-batch(es): {par['devices']} device(s)",
             f"  layout: {len(split)} of {len(placements)} variables split" + (f": {shown}" if split else "")
             + "; the rest replicated"]
    if par["stages"] > 1:
        lines.append(f"  stages: {c['pipeline']['cuts']}")
        for st in par["per_stage"]:
            lines.append(f"  stage {st['stage']}: {', '.join(st['layers'])} ({_si(st['parameters'])} parameters, "
                         f"{_si(st['memory']['total_bytes'], 'B')})")
    lines += [
        f"  memory/device: {_si(m['total_bytes'], 'B')} of {_si(m['device_memory_bytes'], 'B')} "
        f"({'fits' if m['fits'] else 'does NOT fit'}) = parameters {_si(m['parameters_bytes'], 'B')} + gradients "
        f"{_si(m['gradients_bytes'], 'B')} + optimizer {_si(m['optimizer_bytes'], 'B')} + optimizer workspace "
        f"{_si(m['optimizer_workspace_bytes'], 'B')} + activations {_si(m['activations_bytes'], 'B')}"
        + (f" (stage {m['stage']})" if par["stages"] > 1 else ""),
        f"  parameters + optimizer per device: {m['ratio_vs_replicated']:.3g} x replicated",
        f"  per step: model axis all-gather {_si(c['model_axis']['all_gather_bytes_per_micro_batch'], 'B')} + "
        f"reduce-scatter {_si(c['model_axis']['reduce_scatter_bytes_per_micro_batch'], 'B')} + all-reduce "
        f"{_si(c['model_axis']['all_reduce_bytes_per_micro_batch'], 'B')} per micro-batch "
        f"({c['model_axis']['seconds'] * 1e3:.4g} ms); data axis all-reduce {_si(c['data_axis']['all_reduce_bytes'], 'B')} "
        f"({c['data_axis']['seconds'] * 1e3:.4g} ms); pipeline bubble (S-1)/(K+S-1) = {c['pipeline']['bubble']:.0%} "
        f"({c['pipeline']['bubble_s'] * 1e3:.4g} ms)",
    ]
    return lines


def render_recommendation(rec: dict) -> list[str]:
    if rec.get("fits_one_device") and not rec.get("candidates"):
        return [f"recommend: parallelism: {rec['reason']}"]
    lines = [f"recommend: parallelism: {rec['reason']}"]
    for c in rec.get("candidates", []):
        lines.append(f"  {c['overrides']}: {_si(c['memory_per_device_bytes'], 'B')}/device "
                     f"({c['fraction_of_device']:.0%}), {c['step_s'] * 1e3:.4g} ms/step, "
                     f"{_si(c['examples_per_s'])} examples/s ({c['dominant']} dominates)")
    return lines


def plot(plan: dict, path: str) -> str:
    """Save the predicted scaling curve (efficiency vs replicas) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = plan["scaling"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    strong = [(r["replicas"], r["efficiency_fixed_global"]) for r in rows if "efficiency_fixed_global" in r]
    ax.plot([x for x, _ in strong], [y for _, y in strong], "o-", label="fixed global batch")
    ax.plot([r["replicas"] for r in rows], [r["efficiency_fixed_per_replica"] for r in rows], "s--",
            label="fixed per-replica batch")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("replicas")
    ax.set_ylabel("predicted scaling efficiency")
    if rows[-1]["replicas"] > 32:
        ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.05)
    t = plan["topology"]
    ax.set_title(f"{plan['config']['model']} on {plan['hardware']['hardware']}, strategy {t['strategy']}, "
                 f"batch {t['global_batch']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
