"""Memory per device and communication per step under data x model x pipeline parallelism.

A strategy states how it splits a step (`Strategy.parallelism` -> `Parallelism`: D replicas on the
data axis, M devices on the model axis, S pipeline stages, K micro-batches, layout overrides); the
model states its variables (`Model.variable_shapes`) and default layout rules (`Model.layout_rules`).
From the config alone (no TensorFlow, no JAX):

    placement  every variable: the rule that matched (strategy.layout first, then the model's
               defaults, else replicated), its axes, the shards it is cut into, its pipeline stage
    memory     per device = its variables' shards x 4 B x (weights + gradients + optimizer slots)
               + optimizer workspace + the activations its stage keeps for the backward pass
    step       = (K + S - 1) x the slowest stage's micro-batch time          (GPipe schedule)
                 + all-reduce on the data axis + the per-step overhead
      stage micro-batch time = 3 x FLOPs x b/K / FLOP/s (a layer split on the model axis: / M)
                 + model-axis collectives as GSPMD partitions a split kernel (`model_axis_traffic`):
                   all-gather / reduce-scatter (M-1)/M x bytes/W + (M-1) x L each, all-reduce twice that
                 + its boundaries' activations forward and their gradients backward
      data axis  = ring all-reduce over D of the gradient bytes one device holds (its shards)
      bubble     = (S-1)/(K+S-1) of the pipeline time: the stages idle while it fills and drains

With M = S = 1 every term reduces to the data-parallel cost model (`cost_model.step_time`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaleflow.errors import ConfigError
from scaleflow.planning.cost_model import ACTIVATION_BYTES, GRADIENT_BYTES, OPTIMIZER_SLOTS, Workload, \
    optimizer_workspace_bytes, ring_allreduce_s, update_s
from scaleflow.planning.topology import Figures
from scaleflow.strategies.base import DATA_AXIS, MODEL_AXIS, Parallelism

MEMORY_HEADROOM = 0.9  # a plan fits a device when it needs at most this share of its memory
HEAD_LAYER = "scores"  # the task's head (scaleflow/tasks/base.py): without segments it rides with the last block


# ------------------------------------------------------------------------------------ placement
@dataclass(frozen=True)
class Placement:
    """One variable under a layout.

    Args:
        path / shape: as the model states them (`Model.variable_shapes`).
        axes: the mesh axis (or None) of each dimension.
        rule / source: the pattern that placed it and where it came from ("strategy.layout",
            "model default", or "replicated" with rule None).
        shards: how many pieces it is cut into (the product of its axes' mesh sizes).
        stage: the pipeline stage that holds it.
    """

    path: str
    shape: tuple
    axes: tuple
    rule: str | None
    source: str
    shards: int
    stage: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def layer(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def on_model_axis(self) -> bool:
        return MODEL_AXIS in self.axes

    def report(self) -> dict:
        return {"shape": list(self.shape), "axes": list(self.axes), "rule": self.rule, "source": self.source,
                "shards": self.shards, "stage": self.stage}


def variables(model, config, spec) -> dict[str, tuple]:
    """The model's variables, or one replicated block of `num_parameters` when it states none."""
    shapes = model.variable_shapes(config, spec)
    if shapes:
        return dict(shapes)
    return {"parameters/all": (int(model.num_parameters(config, spec) or 0),)}


def place(shapes: dict[str, tuple], defaults: dict, p: Parallelism) -> list[Placement]:
    """Every variable's placement, resolved exactly as the training process resolves it
    (`strategies/layout.LayoutPlan`): `p.layout` (strategy.layout) wins over the model's `defaults`
    for a variable it matches; patterns match whole paths, as Keras' LayoutMap does.

    Raises the run's ConfigError (exit 2, before anything runs) for a rule naming an axis the mesh
    lacks, axes whose count differs from the variable's rank, a dimension the axis' size does not
    divide (a default rule's too), two rules matching one variable, or a `strategy.layout` rule that
    matches no variable (Keras would silently replicate).
    """
    from scaleflow.strategies.layout import MESH_AXES, LayoutPlan, check_rules, normalise

    user = normalise(p.rules)
    check_rules(user, MESH_AXES)
    plan = LayoutPlan(user=user, defaults=normalise(defaults), mesh={DATA_AXIS: p.data, MODEL_AXIS: p.model})
    sizes = {DATA_AXIS: p.data, MODEL_AXIS: p.model}
    placements = []
    for path, shape in shapes.items():
        axes = plan.axes_for(path, shape)
        if axes is None:
            placements.append(Placement(path, tuple(shape), (None,) * len(shape), None, "replicated", 1))
            continue
        source, rule = plan.applied[path][:2]
        placements.append(Placement(path, tuple(shape), tuple(axes), rule, source, math.prod(
            sizes[a] for a in axes if a is not None)))
    plan.check()
    return placements


# -------------------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Layer:
    """One layer's share of the model, per example: forward FLOPs, values kept for the backward
    pass, and values at its output (what a model-axis all-gather or a stage boundary moves)."""

    name: str
    flops: float
    activations: float
    width: float
    in_width: float = 0.0  # values per example at its input (a dense kernel's first dimension)


@dataclass(frozen=True)
class Block:
    """The pipeline's unit: the layers between two of the model's cut points (`Model.cut_segments`),
    else one layer with a kernel plus the layers without one that follow it (normalisation), the
    task's head riding with the last. Stages cut between blocks."""

    layers: tuple  # of Layer

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def flops(self) -> float:
        return sum(layer.flops for layer in self.layers)

    @property
    def width(self) -> float:
        """Values per example at its output (what the next stage receives): its last layer with a kernel."""
        return next((x.width for x in reversed(self.layers) if x.width), 0.0)


def blocks(placements: list[Placement], work: Workload, segments: list[list[str]] | None = None) -> list[Block]:
    """The model's blocks, in order, with each layer's FLOPs and activations per example. A dense
    kernel (a, b) costs 2ab FLOPs and outputs b values; what the model's totals leave over
    (convolutions, whose spatial size the shapes do not tell) is shared in proportion to the other
    kernels' sizes. Activations are scaled to the model's total (`Workload.activations_per_example`)."""
    order: list[str] = []
    kernels: dict[str, list[Placement]] = {}
    for pl in placements:
        if pl.layer not in kernels:
            order.append(pl.layer)
            kernels[pl.layer] = []
        if pl.path.endswith("/kernel") and len(pl.shape) >= 2:
            kernels[pl.layer].append(pl)
    dense = {n: (sum(2.0 * k.size for k in ks if len(k.shape) == 2), float(sum(k.shape[-1] for k in ks if len(k.shape) == 2)))
             for n, ks in kernels.items()}
    inputs = {n: float(sum(k.shape[0] for k in ks if len(k.shape) == 2)) for n, ks in kernels.items()}
    other = {n: float(sum(k.size for k in ks if len(k.shape) > 2)) for n, ks in kernels.items()}
    total_other = sum(other.values())
    rest_flops = max(0.0, work.flops_per_example - sum(f for f, _ in dense.values()))
    rest_acts = max(0.0, work.activations_per_example - sum(w for _, w in dense.values()))
    layers, previous = [], 0.0
    for n in order:
        share = other[n] / total_other if total_other else 0.0
        flops, width = dense[n][0] + rest_flops * share, dense[n][1] + rest_acts * share
        layers.append(Layer(n, flops, width, width, inputs[n] or previous))
        previous = width or previous
    kept = sum(layer.activations for layer in layers)
    if kept:  # the model's activation count, shared as the layers' outputs are
        layers = [Layer(x.name, x.flops, x.activations * work.activations_per_example / kept, x.width, x.in_width)
                  for x in layers]
    if not any(x.flops for x in layers):  # nothing known per layer: share evenly
        n = len(layers)
        layers = [Layer(x.name, work.flops_per_example / n, work.activations_per_example / n,
                        x.width or work.activations_per_example / n, x.in_width) for x in layers]
    by_name = {x.name: x for x in layers}
    if segments and sorted(n for seg in segments for n in seg) == sorted(by_name):
        return [Block(tuple(by_name[n] for n in seg)) for seg in segments]
    out: list[list[Layer]] = []
    for layer in layers:
        if not out or (kernels[layer.name] and layer.name != HEAD_LAYER):
            out.append([])
        out[-1].append(layer)
    return [Block(tuple(b)) for b in out]


def stage_of_blocks(bl: list[Block], stages: int, cuts=(), cut_points=None) -> tuple[list[int], str]:
    """Each block's stage, and how they were chosen: after the strategy's `cuts` when the model's
    cut points map one to one onto the gaps between its blocks (as the built-ins' do), else
    contiguous stages balancing forward FLOPs (block i on stage floor(S x FLOPs before its middle /
    total), monotone, every stage non-empty)."""
    if stages <= 1:
        return [0] * len(bl), "one stage"
    points = list(cut_points or [])
    if cuts and len(points) == len(bl) - 1 and all(c in points for c in cuts):
        after, out, s = sorted(points.index(c) for c in cuts), [], 0
        for i in range(len(bl)):
            out.append(s)
            if s < len(after) and i == after[s]:
                s += 1
        return out, "cut after " + ", ".join(cuts)
    return _balanced(bl, stages), "balanced by forward FLOPs (the planner's choice)"


def cut_names(stage_index: list[int], cut_points) -> list[str] | None:
    """The model's cut points where the stages change (what `strategy.cuts` would name), when they
    map one to one onto the gaps between blocks; None otherwise."""
    points = list(cut_points or [])
    if len(points) != len(stage_index) - 1:
        return None
    return [points[i] for i in range(len(points)) if stage_index[i + 1] != stage_index[i]]


def _balanced(bl: list[Block], stages: int) -> list[int]:
    total = sum(b.flops for b in bl) or 1.0
    out, before = [], 0.0
    for i, b in enumerate(bl):
        s = min(stages - 1, int(stages * (before + b.flops / 2) / total))
        s = max(s, out[-1] if out else 0)
        s = max(s, stages - (len(bl) - i))  # leave a block for every later stage
        s = min(s, (out[-1] + 1) if out else 0)  # no stage skipped
        out.append(s)
        before += b.flops
    return out


# ------------------------------------------------------------------------ model-axis collectives
COLLECTIVES = ("all_gather", "reduce_scatter", "all_reduce")


def model_axis_traffic(bl: list[Block], placements: list[Placement], model: int) -> dict[str, dict[str, float]]:
    """Values per example each layer moves over the model axis in one forward + backward pass, by
    collective, as GSPMD partitions a kernel split on its output dimension ("column") or on its
    input dimension ("row"):

        column, next layer row-split   nothing forward (the row layer takes the split outputs);
                                       backward an all-reduce of its input's gradient (none for the
                                       first layer: the data need no gradient)
        column, otherwise              all-gather of its outputs forward, reduce-scatter of their
                                       gradient backward
        row                            all-reduce of its partial outputs forward; and when the layer
                                       before is not column-split, an all-gather of its input's
                                       gradient backward (the input is only sliced forward)
    """
    none = {kind: 0.0 for kind in COLLECTIVES}
    layers = [x for b in bl for x in b.layers]
    if model <= 1:
        return {x.name: dict(none) for x in layers}
    direction: dict[str, str] = {}
    for pl in placements:
        if len(pl.shape) >= 2 and pl.path.endswith("/kernel") and MODEL_AXIS in pl.axes:
            direction[pl.layer] = "column" if pl.axes[-1] == MODEL_AXIS else "row"
    with_kernel = [x for x in layers if any(pl.layer == x.name and len(pl.shape) >= 2 for pl in placements)]
    out = {x.name: dict(none) for x in layers}
    for i, x in enumerate(with_kernel):
        before = direction.get(with_kernel[i - 1].name) if i else None
        after = direction.get(with_kernel[i + 1].name) if i + 1 < len(with_kernel) else None
        kind = direction.get(x.name)
        if kind == "column" and after == "row":
            out[x.name]["all_reduce"] = x.in_width if i else 0.0
        elif kind == "column":
            out[x.name]["all_gather"] = out[x.name]["reduce_scatter"] = x.width
        elif kind == "row":
            out[x.name]["all_reduce"] = x.width
            if before != "column":
                out[x.name]["all_gather"] = x.in_width
    return out


# -------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ParallelStep:
    compute_s: float
    model_axis_s: float
    pipeline_send_s: float
    bubble_s: float
    data_axis_s: float
    overhead_s: float
    update_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.compute_s + self.model_axis_s + self.pipeline_send_s + self.bubble_s + self.data_axis_s \
            + self.update_s + self.overhead_s

    @property
    def dominant(self) -> str:
        terms = {"compute": self.compute_s, "model-axis collectives": self.model_axis_s,
                 "pipeline sends": self.pipeline_send_s, "pipeline bubble": self.bubble_s,
                 "data-axis all-reduce": self.data_axis_s, "optimizer update": self.update_s,
                 "overhead": self.overhead_s}
        return max(terms, key=terms.get)

    def report(self) -> dict:
        out = {k: float(f"{getattr(self, k):.6g}") for k in self.__dataclass_fields__}
        return {**out, "total_s": float(f"{self.total_s:.6g}"), "dominant": self.dominant}


def _link(figs: Figures, devices: int, multi_process: bool) -> tuple[float, float]:
    if multi_process or devices > figs.devices_per_host:
        return figs.inter_host_bandwidth_bytes_s, figs.inter_host_latency_s
    return figs.bandwidth_bytes_s, figs.latency_s


def plan_parallelism(work: Workload, figs: Figures, p: Parallelism, placements: list[Placement],
                     multi_process: bool = False, global_batch: int | None = None,
                     backend: str = "tensorflow", cut_points: list[str] | None = None,
                     segments: list[list[str]] | None = None) -> dict:
    """Memory per device, collectives and step time of `work` split as `p` on `figs`.

    Args:
        work: the workload (FLOPs, parameters, activations per example, global batch, optimizer).
        figs: the hardware figures.
        p: the split (data x model axes, stages, micro-batches).
        placements: `place(...)` of the model's variables under p's mesh.
        multi_process: True when the data axis spans processes (its ring uses the slower link).
        global_batch: another global batch than the workload's.
        backend: the strategy's Keras backend (`Strategy.backend`: the optimizer workspace differs).
        cut_points: the model's cut points (`Model.cut_points`), to place `p.cuts`.
        segments: the model's layers between them (`Model.cut_segments`): the pipeline's blocks.
    Returns:
        {"memory_per_device", "communication", "step", "per_stage", "placements"} (plain data for plan.json).
    """
    batch = work.global_batch if global_batch is None else global_batch
    b = batch / p.data  # one replica's examples per step
    S, K, M, D = p.stages, p.micro_batches, p.model, p.data
    act_bytes = ACTIVATION_BYTES.get(figs.precision, 4)
    slots = OPTIMIZER_SLOTS.get(work.optimizer, 2)

    bl = blocks(placements, work, segments)
    if S > len(bl):
        raise ConfigError("strategy.stages", S, f"at most {len(bl)}: the model has {len(bl)} block(s) to cut "
                          f"between ({', '.join(b.names[0] for b in bl)})", "Each stage needs at least one block")
    stage_index, how_cut = stage_of_blocks(bl, S, p.cuts, cut_points)
    layer_stage = {layer.name: s for blk, s in zip(bl, stage_index) for layer in blk.layers}
    placements = [Placement(pl.path, pl.shape, pl.axes, pl.rule, pl.source, pl.shards, layer_stage.get(pl.layer, 0))
                  for pl in placements]
    split_layers = {pl.layer for pl in placements if pl.on_model_axis and M > 1 and len(pl.shape) >= 2}
    traffic = model_axis_traffic(bl, placements, M)

    rate = figs.peak_flops / (min(p.devices, figs.devices_per_host) if figs.shared_compute else 1)
    model_bw, model_lat = _link(figs, M, False)
    send_bw, send_lat = _link(figs, M * S, False)
    data_bw, data_lat = _link(figs, p.devices, multi_process)

    # values per example crossing boundary b (after stage b): the output of stage b's last block
    boundary_width = [[blk for blk, i in zip(bl, stage_index) if i == b][-1].width for b in range(S - 1)]
    stages = []
    for s in range(S):
        mine = [blk for blk, i in zip(bl, stage_index) if i == s]
        layers = [layer for blk in mine for layer in blk.layers]
        split = [layer for layer in layers if layer.name in split_layers]
        vars_ = [pl for pl in placements if pl.stage == s]
        values = sum(pl.size / pl.shards for pl in vars_)
        replicated = sum(pl.size for pl in vars_)
        # a layer split on the model axis computes and keeps 1/M of its outputs on each device
        flops = sum(x.flops / (M if x in split else 1) for x in layers)
        acts = sum(x.activations / (M if x in split else 1) for x in layers)
        micro = b / K
        compute = 3.0 * flops * micro / rate
        moved = {kind: sum(traffic[x.name][kind] for x in split) * micro * act_bytes for kind in COLLECTIVES}
        calls = {kind: sum(1 for x in split if traffic[x.name][kind]) for kind in COLLECTIVES}
        # all-gather and reduce-scatter: half a ring all-reduce each (n bytes: (M-1)/M n/W + (M-1) L)
        model_axis = sum(ring_allreduce_s(M, moved[kind], model_bw, 0) / (2 if kind != "all_reduce" else 1)
                         + calls[kind] * ring_allreduce_s(M, 0, model_bw, model_lat) / (2 if kind != "all_reduce" else 1)
                         for kind in COLLECTIVES) if M > 1 else 0.0
        # each boundary of the stage, both ways (activations forward, their gradient backward); a
        # transfer occupies the stages on both sides of it
        boundaries = [b for b in (s - 1, s) if 0 <= b < S - 1]
        send = sum(2 * (boundary_width[b] * micro * act_bytes / send_bw + send_lat) for b in boundaries)
        largest = max((pl.size / pl.shards for pl in vars_), default=0)
        memory = {
            "parameters_bytes": int(values * 4), "gradients_bytes": int(values * GRADIENT_BYTES),
            "optimizer_bytes": int(values * 4 * slots),
            "optimizer_workspace_bytes": optimizer_workspace_bytes(largest, work.optimizer, backend),
            # GPipe keeps every micro-batch's activations of its stage until the backward pass
            "activations_bytes": int(acts * b * act_bytes * 2),
        }
        memory["total_bytes"] = sum(memory.values())
        stages.append({"stage": s, "layers": [x.name for x in layers],
                       "parameters": int(replicated), "parameters_per_device": int(values),
                       "forward_flops_per_example": float(f"{flops:.6g}"),
                       "micro_batch_s": {"compute": compute, "model_axis": model_axis, "send": send},
                       "model_axis_bytes": {k: int(v) for k, v in moved.items()},
                       "memory": memory,
                       "gradient_bytes_per_device": int(values * GRADIENT_BYTES)})

    slowest = max(stages, key=lambda st: sum(st["micro_batch_s"].values()))
    t = slowest["micro_batch_s"]
    compute_s, model_axis_s, send_s = K * t["compute"], K * t["model_axis"], K * t["send"]
    bubble_s = (S - 1) * sum(t.values())  # (S-1) of the K+S-1 slots: a share (S-1)/(K+S-1)
    grad_bytes = max(st["gradient_bytes_per_device"] for st in stages)
    # One collective per step, as cost_model has it: TensorFlow packs the gradients into one, and XLA's
    # all-reduce combiner merges JAX's per-variable reductions on the data axis.
    data_axis_s = ring_allreduce_s(D, grad_bytes, data_bw, data_lat)
    sharing = min(p.devices, figs.devices_per_host) if figs.shared_compute else 1
    overhead_s = figs.step_overhead_s * sharing
    # each device updates its own share of the variables (the largest stage's); a shared CPU runs them all
    update = update_s(max(st["parameters_per_device"] for st in stages), work.optimizer, figs) * sharing
    step = ParallelStep(compute_s, model_axis_s, send_s, bubble_s, data_axis_s, overhead_s, update)

    worst = max(stages, key=lambda st: st["memory"]["total_bytes"])
    memory = dict(worst["memory"])
    replicated_state = sum(pl.size for pl in placements) * 4 * (1 + slots)
    state = memory["parameters_bytes"] + memory["optimizer_bytes"]
    memory.update(stage=worst["stage"], device_memory_bytes=int(figs.memory_bytes),
                  fraction_of_device=round(memory["total_bytes"] / figs.memory_bytes, 6) if figs.memory_bytes else None,
                  fits=bool(not figs.memory_bytes or memory["total_bytes"] <= MEMORY_HEADROOM * figs.memory_bytes),
                  parameters_optimizer_bytes=int(state), replicated_parameters_optimizer_bytes=int(replicated_state),
                  ratio_vs_replicated=round(state / replicated_state, 6) if replicated_state else None)
    per_micro = {kind: max(st["model_axis_bytes"][kind] for st in stages) for kind in COLLECTIVES}
    communication = {
        "model_axis": {"size": M, **{f"{kind}_bytes_per_micro_batch": v for kind, v in per_micro.items()},
                       "seconds": float(f"{model_axis_s:.6g}"), "layers_split": sorted(split_layers),
                       "per_layer_values_per_example": {n: t for n, t in traffic.items() if any(t.values())}},
        "data_axis": {"size": D, "all_reduce_bytes": grad_bytes, "seconds": float(f"{data_axis_s:.6g}")},
        "pipeline": {"stages": S, "micro_batches": K, "bubble": round(p.bubble, 6), "cuts": how_cut,
                     "cut_points": cut_names(stage_index, cut_points),
                     "bubble_s": float(f"{bubble_s:.6g}"), "send_s": float(f"{send_s:.6g}")},
    }
    for st in stages:
        st["micro_batch_s"] = {k: float(f"{v:.6g}") for k, v in st["micro_batch_s"].items()}
        del st["gradient_bytes_per_device"]
    return {"memory_per_device": memory, "communication": communication, "step": step.report(),
            "examples_per_s": float(f"{batch / step.total_s:.6g}"), "per_stage": stages,
            "placements": {pl.path: pl.report() for pl in placements}}


# ---------------------------------------------------------------------------------- the devices
def available_devices(figs: Figures, processes: int) -> int:
    """Devices the job can use: the hardware's, or each process' own when several share a host."""
    return figs.devices if processes <= figs.hosts else figs.devices_per_host * processes


def device_override(figs: Figures, devices: int) -> str:
    """The override that gives the hardware `devices` devices."""
    if figs.hardware == "cpu":
        return f"hardware.logical_devices={devices}"
    if figs.hardware == "gpu":
        return f"hardware.num_gpus={devices}"
    return f"hardware.devices_per_host={devices}"


def check_devices(cfg, figs: Figures, p: Parallelism, processes: int) -> None:
    """A split over the model axis or stages must use exactly the devices there are (exit 2)."""
    if p.model == 1 and p.stages == 1:
        return  # data parallelism: the strategy's topology already counts the devices
    have = available_devices(figs, processes)
    if p.devices == have:
        return
    mesh = cfg.strategy.get("mesh") if hasattr(cfg.strategy, "get") else None
    fix = f"or set {device_override(figs, p.devices)}"
    if p.stages > 1 and p.model == 1:
        raise ConfigError("strategy.stages", p.stages, f"{have // p.data if have % p.data == 0 else have} stage(s): "
                          f"{p.data} replica(s) x stages must equal the {have} device(s) of hardware={figs.hardware}",
                          f"Each stage runs on its own device; {fix}")
    value = list(mesh) if mesh is not None else list(p.mesh)
    raise ConfigError("strategy.mesh", value, f"a mesh [D, M] with D x M{' x stages' if p.stages > 1 else ''} = "
                      f"{have} (the devices of hardware={figs.hardware})",
                      f"The mesh has {p.devices} device(s); {fix}")


# ---------------------------------------------------------------------------- the recommendation
def candidate_splits(devices: int, global_batch: int, blocks_count: int,
                     strategies: dict) -> list[tuple[str, Parallelism]]:
    """Every split over `devices` devices that the installed strategies offer (`split_candidates`)."""
    return [(name, p) for name, strategy in strategies.items()
            for p in strategy.split_candidates(devices, global_batch, blocks_count)]


def overrides_for(strategy, p: Parallelism, figs: Figures, cuts: list[str] | None = None) -> str:
    split = strategy.split_overrides(p, cuts)
    return f"strategy={strategy.name} {split} {device_override(figs, p.devices)}"


def recommend_parallelism(work: Workload, figs: Figures, shapes: dict, defaults: dict, registered: dict,
                          configured_fits: bool = True, max_devices: int = 1024, top: int = 6,
                          cut_points: list[str] | None = None, segments: list[list[str]] | None = None) -> dict:
    """When the model does not fit one device (or the configured split does not fit): the splits
    that fit, the fewest devices first, each with its memory per device and predicted throughput;
    the best is the fastest of those that fit on the fewest devices that suffice (or on the
    hardware's devices, if it has more).

    Args:
        registered: the installed strategies, name -> class: each offers its splits
            (`split_candidates`, `split_overrides`) and its Keras backend (`backend`).
        cut_points / segments: the model's cut points and the layers between them (pipeline
            candidates cut there and name their cuts: `strategy.cuts`).
    """
    one = plan_parallelism(work, figs, Parallelism(), place(shapes, defaults, Parallelism()))
    need = one["memory_per_device"]
    if need["fits"] and configured_fits:
        return {"fits_one_device": True, "reason": f"the model fits one device ({need['total_bytes'] / 1e9:.3g} GB "
                f"of {figs.memory_bytes / 1e9:.3g} GB): data parallelism suffices"}
    blocks_count = len(blocks(place(shapes, defaults, Parallelism()), work, segments))
    fitting, tried, devices = [], 0, 2
    while devices <= max_devices and not (fitting and devices > max(figs.devices, min(f["devices"] for f in fitting))):
        hw = figs
        if figs.single_host and devices > figs.devices_per_host:  # a host with that many devices
            hw = type(figs)(**{**figs.__dict__, "devices_per_host": devices})
        for strategy, p in candidate_splits(devices, work.global_batch, blocks_count, registered):
            try:
                placements = place(shapes, defaults, p)
            except ConfigError:
                continue  # the mesh does not divide a dimension the default rules split
            tried += 1
            r = plan_parallelism(work, hw, p, placements, cut_points=cut_points, segments=segments,
                                 backend=registered[strategy].backend)
            mem = r["memory_per_device"]
            if mem["fits"]:
                cuts = r["communication"]["pipeline"]["cut_points"]
                fitting.append({"strategy": strategy, "overrides": overrides_for(registered[strategy], p, figs, cuts),
                                "mesh": list(p.mesh), "stages": p.stages,
                                "micro_batches": p.micro_batches, "devices": p.devices,
                                "hardware_has_them": p.devices <= figs.devices,
                                "memory_per_device_bytes": mem["total_bytes"],
                                "fraction_of_device": mem["fraction_of_device"],
                                "step_s": r["step"]["total_s"], "examples_per_s": r["examples_per_s"],
                                "dominant": r["step"]["dominant"]})
        devices *= 2
    if not fitting:
        return {"fits_one_device": False, "candidates": [], "best": None,
                "reason": f"no split over up to {max_devices} devices fits ({tried} tried): one device needs "
                          f"{need['total_bytes'] / 1e9:.3g} GB of {figs.memory_bytes / 1e9:.3g} GB"}
    fewest = min(f["devices"] for f in fitting)
    usable = max(fewest, figs.devices)
    best = max((f for f in fitting if f["devices"] <= usable), key=lambda f: f["examples_per_s"])
    ranked = sorted(fitting, key=lambda f: (f["devices"], -f["examples_per_s"]))[:top]
    if best not in ranked:
        ranked.append(best)
    where = "the hardware has them" if best["hardware_has_them"] else \
        f"the hardware has {figs.devices}: {device_override(figs, best['devices'])}"
    return {"fits_one_device": False, "needs_bytes": need["total_bytes"], "device_memory_bytes": int(figs.memory_bytes),
            "fewest_devices": fewest, "candidates": ranked, "best": best,
            "reason": f"one device needs {need['total_bytes'] / 1e9:.3g} GB of {figs.memory_bytes / 1e9:.3g} GB "
                      f"(parameters, gradients, optimizer and its workspace, activations); {best['overrides']} fits "
                      f"({best['memory_per_device_bytes'] / 1e9:.3g} GB/device) and predicts the highest "
                      f"throughput of the splits over {best['devices']} devices or fewer "
                      f"({best['examples_per_s']:.4g} examples/s); {where}"}
