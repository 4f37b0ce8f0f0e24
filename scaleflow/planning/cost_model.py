"""Predicts one training step's time from FLOPs, gradient bytes and the hardware's figures.

    step = compute + all-reduce + overhead
    compute    = 3 x FLOPs/example x per-replica batch / per-replica FLOP/s   (forward + backward ~ 3x forward)
    all-reduce = 2(R-1)/R x gradient bytes / bandwidth + 2(R-1) x latency     (ring all-reduce, R replicas)
                 once per step: every gradient goes in one collective (MultiWorkerMirrored packs them
                 into one with bytes_per_pack=0, TensorFlow's log says "6 all_reduces ... num_packs = 1";
                 Horovod's grouped all-reduce fuses them), so the number of gradient tensors does not
                 multiply the latency
    update     = parameters x bytes one update streams per parameter / update_bytes_s   (memory-bound;
                 per replica where replicas share one CPU)
    overhead   = the fixed cost of a step (dispatch, optimizer update, input): once per step on
                 separate devices; per replica where replicas share one CPU, whose cores then run
                 every replica's share (measured on 2 cores, Mirrored over 2 logical devices against
                 one device: 1.2x idle, 2.7x-5.8x while other jobs loaded the machine)

Replicas on one CPU (logical devices, or several workers on one machine) share its FLOP/s.
The ring's link is the slowest it crosses: between processes (`inter_host_*`: the network stack,
even on one host) when replicas live in several processes, else within one process (memory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scaleflow.planning.topology import Figures, Layout

GRADIENT_BYTES = 4  # Keras keeps float32 variables (and gradients) under mixed precision
ACTIVATION_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "nadam": 2, "rmsprop": 1, "adagrad": 1, "sgd": 0}
# Peak temporaries of one optimizer update, in units of the largest variable, by Keras backend.
# Measured (benchmarks/bench_optimizer_memory.py: Keras 3.15.1, Adam, one 4096x16384 float32 Dense,
# peak RSS of training steps above weights + gradient + 2 slots): TensorFlow 4.30-4.33x (each update
# op materialises a full-size tensor), JAX 0.22-0.27x (XLA fuses the update and donates the state
# buffers); rounded up.
OPTIMIZER_WORKSPACE = {"tensorflow": 4.35, "jax": 0.3}
# Bytes one optimizer update streams per parameter (variables, gradients, slots and the temporaries
# each TensorFlow update op makes). Measured here, Keras 3.15 TF backend on CPU, marginal time per
# parameter between 22k and 1.3M parameters at update_bytes_s 2.8e10: Adam 1.4 ns (~40 B), SGD
# 0.19 ns (~6 B). One-slot optimizers: between the two (not measured).
UPDATE_BYTES_PER_PARAMETER = {"adam": 40, "adamw": 40, "nadam": 40, "rmsprop": 24, "adagrad": 24, "sgd": 6}


def update_s(parameters: float, optimizer: str, figs) -> float:
    """One optimizer update of `parameters` parameters on one device."""
    bandwidth = figs.update_bytes_s
    return parameters * UPDATE_BYTES_PER_PARAMETER.get(optimizer, 40) / bandwidth if bandwidth else 0.0


@dataclass(frozen=True)
class Workload:
    """The model and batch as the cost model sees them.

    Args:
        flops_per_example: forward-pass FLOPs of one example (the model plugin's flops_per_example).
        parameters: trainable parameters (the model plugin's num_parameters).
        global_batch: examples per step over all replicas (data.batch_size).
        activations_per_example: values kept for the backward pass per example (estimate).
    """

    flops_per_example: float
    parameters: int
    global_batch: int
    activations_per_example: float
    optimizer: str = "adam"
    gradient_tensors: int = 1  # reported; data parallelism all-reduces them packed, in one collective per step
    largest_variable: int = 0  # values of the largest variable (the optimizer's workspace follows it)


@dataclass(frozen=True)
class StepTime:
    compute_s: float
    allreduce_s: float
    overhead_s: float
    per_replica_batch: float
    update_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.compute_s + self.allreduce_s + self.update_s + self.overhead_s

    @property
    def dominant(self) -> str:
        terms = {"compute": self.compute_s, "all-reduce": self.allreduce_s, "optimizer update": self.update_s,
                 "overhead": self.overhead_s}
        return max(terms, key=terms.get)

    def report(self) -> dict:
        return {**{k: float(f"{v:.6g}") for k, v in asdict(self).items()}, "total_s": float(f"{self.total_s:.6g}"),
                "dominant": self.dominant}


def ring_allreduce_s(replicas: int, nbytes: float, bandwidth: float, latency: float) -> float:
    """Ring all-reduce of `nbytes` over `replicas`: 2(R-1)/R x bytes / bandwidth + 2(R-1) x latency."""
    if replicas <= 1:
        return 0.0
    return 2 * (replicas - 1) / replicas * nbytes / bandwidth + 2 * (replicas - 1) * latency


def links(figs: Figures, layout: Layout) -> tuple[float, float]:
    """(bandwidth, latency) of the slowest link the ring crosses: between processes or hosts, else memory."""
    if layout.hosts > 1 or layout.workers > 1:
        return figs.inter_host_bandwidth_bytes_s, figs.inter_host_latency_s
    return figs.bandwidth_bytes_s, figs.latency_s


def step_time(work: Workload, figs: Figures, layout: Layout, global_batch: int | None = None) -> StepTime:
    batch = work.global_batch if global_batch is None else global_batch
    b = batch / layout.replicas
    shared = figs.shared_compute
    # Replicas on one CPU share its FLOP/s; separate devices each have their own.
    rate = figs.peak_flops / layout.replicas_per_host if shared else figs.peak_flops
    compute = 3.0 * work.flops_per_example * b / rate
    bandwidth, latency = links(figs, layout)
    allreduce = ring_allreduce_s(layout.replicas, work.parameters * GRADIENT_BYTES, bandwidth, latency)
    per_host = layout.replicas_per_host if shared else 1
    overhead = figs.step_overhead_s * per_host
    # every replica updates its own copy of the variables; on one CPU they share its memory bandwidth
    update = update_s(work.parameters, work.optimizer, figs) * per_host
    return StepTime(compute, allreduce, overhead, b, update)


def optimizer_workspace_bytes(largest_values: float, optimizer: str, backend: str = "tensorflow") -> int:
    """Peak temporaries of the optimizer's update of the largest variable (`OPTIMIZER_WORKSPACE`;
    plain SGD's one `lr x gradient` temporary under TensorFlow)."""
    if OPTIMIZER_SLOTS.get(optimizer, 2) == 0:
        return int(largest_values * 4) if backend == "tensorflow" else 0
    return int(largest_values * 4 * OPTIMIZER_WORKSPACE.get(backend, OPTIMIZER_WORKSPACE["tensorflow"]))


def memory_per_replica(work: Workload, figs: Figures, per_replica_batch: float) -> dict:
    """Bytes one replica holds: weights, gradients and optimizer slots (float32), the optimizer's
    update workspace (TensorFlow backend), and activations kept for the backward pass (in the
    compute precision)."""
    slots = OPTIMIZER_SLOTS.get(work.optimizer, 2)
    state = work.parameters * 4 * (2 + slots)
    workspace = optimizer_workspace_bytes(work.largest_variable, work.optimizer)
    activations = work.activations_per_example * per_replica_batch * ACTIVATION_BYTES.get(figs.precision, 4) * 2
    total = state + workspace + activations
    return {"weights_gradients_optimizer_bytes": int(state), "optimizer_workspace_bytes": workspace,
            "activations_bytes": int(activations),
            "total_bytes": int(total), "device_memory_bytes": int(figs.memory_bytes),
            "fraction_of_device": round(total / figs.memory_bytes, 6) if figs.memory_bytes else None}
