"""Strategies on Keras' distribution API with the JAX backend: a device mesh ("batch" x "model").

Keras' DeviceMesh/LayoutMap/ModelParallel shard nothing on the TensorFlow backend (a prototype: every
variable stays on CPU:0, no error); on the JAX backend they really split kernels and optimizer slots
and match one device (PITFALLS.md, "Model parallelism"). Keras fixes its backend when it is first
imported, so the run is its own process:

    python -m scaleflow strategy=model_parallel hardware.logical_devices=4
      this process: validates (no TensorFlow), then starts the training process and waits for it
      the training process: KERAS_BACKEND=jax and, on a CPU, XLA_FLAGS=
        --xla_force_host_platform_device_count=<hardware.logical_devices>, set before anything imports
        Keras; tf.data still reads the input and the export is still a TensorFlow SavedModel

Every variable's layout comes from the layout rules (strategies/layout.py): the model's defaults,
overridden by `strategy.layout`; a rule that matches nothing or does not fit is exit 2 before
training. The "batch" (data) axis splits each global batch (it must divide by the axis' size). Multi-host
runs get `keras.distribution.initialize`'s arguments from `strategy.cluster` (strategies/jax_cluster.py).

Subclasses say only what mesh they run (`mesh_shape`): model_parallel.py (1 x M), hybrid.py (D x M).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from scaleflow.config.schema import StrategyConfig, bounded
from scaleflow.errors import ConfigError, ScaleflowError
from scaleflow.strategies.base import (UNDER_LAUNCHER, Claim, DATA_AXIS, Distribution, MODEL_AXIS, Parallelism,
                                       Strategy, Topology)
from scaleflow.strategies.layout import MESH_AXES

log = logging.getLogger("scaleflow")

# Set by the launcher in the training process it starts: "train here, on the JAX backend".
JAX_PROCESS_ENV = "SCALEFLOW_JAX_PROCESS"
# Environment a TensorFlow-only launcher leaves in its ranks (horovodrun, mpirun).
TF_ONLY_LAUNCHERS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


@dataclass
class MeshConfig(StrategyConfig):
    """The `strategy` node of a JAX mesh strategy.

    mesh: [D, M] devices on the data and model axes; null lets model_parallel take [1, all devices].
    layout: variable-path pattern -> one mesh axis (batch, model) or null per dimension; overrides the
        model's default rules.
    coordinator_port: strategy.cluster=slurm: the port of the coordinator (the first host).
    """

    mesh: Optional[List[int]] = None
    layout: Any = None  # {pattern: axes}; Any, not Dict: Hydra then takes `strategy.layout={...}` without a `+`
    coordinator_port: int = bounded(12355, min=1, max=65535)


def in_jax_process() -> bool:
    return os.environ.get(JAX_PROCESS_ENV) == "1" and os.environ.get("KERAS_BACKEND") == "jax"


def cluster_arguments(cfg) -> dict | None:
    """`keras.distribution.initialize`'s arguments for `strategy.cluster`, or None (one local process)."""
    from scaleflow.strategies.jax_cluster import initialize_arguments

    return initialize_arguments(cfg.strategy.cluster, os.environ, cfg.strategy.get("coordinator_port", 12355))


class KerasJaxStrategy(Strategy):
    """Base of the strategies that run on a ("batch", "model") device mesh on Keras' JAX backend."""

    Config = MeshConfig
    backend = "jax"

    # ------------------------------------------------------------------ questions from the config
    @classmethod
    def mesh_shape(cls, cfg: Any) -> tuple[int, int]:
        """(D, M): devices on the data axis and on the model axis. ConfigError when the config's mesh
        does not fit the devices."""
        raise NotImplementedError

    @classmethod
    def num_processes(cls, cfg: Any) -> int:
        args = cluster_arguments(cfg)
        return args["num_processes"] if args else 1

    @classmethod
    def devices(cls, cfg: Any) -> int | None:
        """Devices of the whole job known from the config (a CPU's logical devices on every host), or
        None when only the running process can count them (GPUs)."""
        hw = cfg.hardware
        if hw.name == "cpu":
            return int(hw.logical_devices) * cls.num_processes(cfg)
        if hw.get("num_gpus", -1) > 0:
            return int(hw.num_gpus) * cls.num_processes(cfg)
        return None

    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        if cfg.strategy.name == cls.name:
            data, model = cls.mesh_shape(cfg)
            processes = cls.num_processes(cfg)
        else:  # the planner asks what it would do with another strategy's config: the model over every device
            data, model, processes = 1, max(1, figures.devices_per_host) * max(1, figures.hosts), max(1, figures.hosts)
        return Topology(hosts=processes, processes=processes, replicas=data, pipelines=min(data, processes),
                        devices_per_replica=model)

    @classmethod
    def split_overrides(cls, split: Parallelism, cuts: list[str] | None = None) -> str:
        return f"strategy.mesh=[{split.data},{split.model}]"

    @classmethod
    def parallelism(cls, cfg, figures) -> Parallelism:
        topology = cls.topology(cfg, figures)
        layout = cfg.strategy.get("layout") if cfg.strategy.name == cls.name else None
        return Parallelism(data=topology.replicas, model=topology.devices_per_replica, layout=dict(layout or {}))

    @classmethod
    def process_rank(cls, cfg, environ) -> int | None:
        if environ.get(JAX_PROCESS_ENV) == "1":
            return UNDER_LAUNCHER  # the training process: its launcher holds the run dir's lock
        if cfg.strategy.cluster == "local":
            return None
        from scaleflow.strategies.jax_cluster import initialize_arguments

        try:
            return initialize_arguments(cfg.strategy.cluster, environ, cfg.strategy.get("coordinator_port", 12355))[
                "process_id"]
        except ConfigError:
            return None  # validation says what is wrong with the cluster's environment

    @classmethod
    def suits(cls, cfg, figures) -> bool:
        # Considered by mode=plan only when chosen: a model split pays only when it does not fit one device.
        return cfg.strategy.name == cls.name and super().suits(cfg, figures)

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        return None  # chosen by name only: strategy=auto never splits a model

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str] | None:
        data, _ = cls.mesh_shape(cfg)
        return data, f"the {data} devices of the mesh's data axis"

    @classmethod
    def validate(cls, cfg) -> None:
        """Before any process starts: nothing TensorFlow-only, a mesh that fits the devices, layout
        rules naming mesh axes, a cluster the environment describes, the batch rule."""
        cls._check_backend(cfg)
        if cfg.strategy.cluster != "local":
            cls.num_processes(cfg)  # a cluster the environment does not describe: exit 2 now
        data, _ = cls.mesh_shape(cfg)
        processes = cls.num_processes(cfg)
        if max(data, processes) % min(data, processes):
            raise ConfigError("strategy.mesh", list(cls.mesh_shape(cfg)), f"a data axis that divides or is divided by "
                              f"the {processes} processes", "each process must feed whole rows of the mesh, or "
                              "share one row with the same number of other processes")
        from scaleflow.strategies import layout

        layout.check_rules(layout.normalise(cfg.strategy.layout), MESH_AXES)
        super().validate(cfg)

    @classmethod
    def _check_backend(cls, cfg) -> None:
        """Everything the run uses must work on the JAX backend: the model plugin and the exporter say
        which backends they support; Horovod and TensorFlow's profilers are TensorFlow-only."""
        from scaleflow import registry

        for kind, key, name in (("model", "model", cfg.model.name), ("exporter", "export", cfg.export.format)):
            obj = registry.get(kind, name)
            if cls.backend not in obj.backends:
                supporting = [n for n in registry.names(kind) if cls.backend in registry.get(kind, n).backends]
                raise ConfigError(key, name, f"a {kind} that runs on Keras' {cls.backend} backend with "
                                  f"strategy={cls.name}: " + ", ".join(supporting),
                                  f"{kind} {name} declares backends {list(obj.backends)} (its `backends` "
                                  "attribute): it uses TensorFlow-only code")
        launcher = [v for v in TF_ONLY_LAUNCHERS if v in os.environ]
        if launcher:
            raise ConfigError("strategy", cls.name, "a TensorFlow strategy (e.g. horovod) under horovodrun/mpirun",
                              f"this process was started by a Horovod/MPI launcher ({launcher[0]} is set), whose "
                              f"collectives are TensorFlow ops; strategy={cls.name} runs on JAX: start it with "
                              "python -m scaleflow directly")
        if cfg.profile.name not in ("off", "tensorboard"):
            raise ConfigError("profile", cfg.profile.name, f"off or tensorboard with strategy={cls.name}",
                              f"profile={cfg.profile.name} times TensorFlow's training function; the JAX "
                              "profiler's trace is profile=tensorboard")
        if cfg.profile.get("port") is not None:
            raise ConfigError("profile.port", cfg.profile.port, f"null with strategy={cls.name}",
                              "the profiler server is TensorFlow's; use profile=tensorboard for a JAX trace")

    @classmethod
    def _check_devices(cls, cfg, data: int, model: int, key: str) -> None:
        devices = cls.devices(cfg)
        if devices is not None and data * model != devices:
            raise ConfigError(key, [data, model], f"[D, M] with D x M = {devices}, the devices of "
                              f"{_devices_text(cfg, cls.num_processes(cfg))}",
                              f"[{data}, {model}] needs {data * model} devices; valid meshes: "
                              + ", ".join(f"[{d}, {devices // d}]" for d in range(1, devices + 1) if devices % d == 0))

    # ------------------------------------------------------------------------- process lifecycle
    def launches(self, cfg) -> bool:
        return not in_jax_process()

    def launch(self, cfg, run_dir: str) -> int:
        """Start the training process (JAX backend, the host device count set) and wait for it."""
        from hydra.core.hydra_config import HydraConfig

        command = training_command(list(HydraConfig.get().overrides.task), run_dir)
        env = training_environment(cfg, dict(os.environ))
        log.info("strategy=%s: training in a JAX process (KERAS_BACKEND=jax%s), mesh %s", self.name,
                 f", {DEVICE_COUNT_FLAG}={env.get('_devices')}" if env.get("_devices") else "",
                 "x".join(map(str, self.mesh_shape(cfg))))
        env.pop("_devices", None)
        if self.mesh_shape(cfg)[1] == 1:
            log.warning("strategy=%s: the model axis has 1 device, so no variable is split; on a CPU set "
                        "hardware.logical_devices=N (and strategy.mesh=[D,M] for hybrid)", self.name)
        status = run_child(command, env)
        if status not in (2, 130, 143):
            return status
        # A config error found in the training process (a layout rule), or a stop on a signal: it said
        # which, on its own line. One run exits with its status; a sweep records the job as failed
        # (exit 2) or stops, as for any interrupted job.
        if HydraConfig.get().mode.name != "MULTIRUN":
            raise SystemExit(status)
        if status == 2:
            raise ScaleflowError(f"strategy={self.name}: the training process refused the config (exit status 2); "
                                 f"see {os.path.join(run_dir, 'jax.log')}")
        from scaleflow.signals import TrainingInterrupted, resume_command

        raise TrainingInterrupted(status - 128, "in the training process", resume_command())

    def is_writer(self, cfg) -> bool:
        args = cluster_arguments(cfg)
        return args is None or args["process_id"] == 0

    def join(self, cfg) -> None:
        """In the training process, before JAX runs anything: the backend must be JAX, and a
        multi-host run connects to its coordinator."""
        import keras

        if keras.backend.backend() != "jax":
            raise ScaleflowError(f"strategy={self.name} needs Keras' JAX backend, but Keras was imported with "
                                 f"the {keras.backend.backend()} backend in this process; run it through "
                                 "python -m scaleflow, which starts the JAX process itself")
        if cfg.trainer.verbose != "debug":  # jax2tf's export notes are noise here (nothing asks for gradients)
            logging.getLogger("absl").addFilter(_quiet_export_notes)
        args = cluster_arguments(cfg)
        if args:
            log.info("keras.distribution.initialize(%s)", ", ".join(f"{k}={v!r}" for k, v in args.items()))
            keras.distribution.initialize(**args)

    def create(self, cfg) -> Distribution:
        import jax

        from scaleflow import registry, tasks
        from scaleflow.strategies import layout

        data, model = self.mesh_shape(cfg)
        devices = jax.devices()
        if len(devices) < data * model:
            raise ScaleflowError(f"strategy={self.name}: the mesh [{data}, {model}] needs {data * model} devices, "
                                 f"JAX sees {len(devices)} ({devices[0].platform})")
        args = cluster_arguments(cfg) or \
            {"num_processes": 1, "process_id": 0}
        # The model's default rules depend on what the data feeds it (a CNN's kernel rank, ...).
        task, dataset = tasks.get(cfg), tasks.dataset_for(cfg)
        spec = task.input_spec(dataset.describe(cfg.data))
        plugin = registry.get("model", cfg.model.name)()
        plan = layout.LayoutPlan(user=layout.normalise(cfg.strategy.layout),
                                 defaults=layout.normalise(plugin.layout_rules(cfg.model, spec), key="model default"),
                                 mesh={DATA_AXIS: data, MODEL_AXIS: model})
        return JaxDistribution(self.name, (data, model), devices[:data * model], plan,
                               num_processes=args["num_processes"], process_id=args["process_id"])


def _quiet_export_notes(record: logging.LogRecord) -> bool:
    """Drop jax2tf's notes on every export ("... with ops with unsaved custom gradients", renamed
    input names): a served model never asks for gradients. A filter, not a level: TensorFlow resets
    absl's level."""
    message = record.getMessage()
    return "unsaved custom gradients" not in message and "with unsupported characters" not in message


def _devices_text(cfg, processes: int) -> str:
    hw = cfg.hardware
    what = f"hardware.logical_devices={hw.logical_devices}" if hw.name == "cpu" else f"hardware.num_gpus={hw.num_gpus}"
    return what + (f" on each of {processes} processes" if processes > 1 else "")


# ----------------------------------------------------------------------------- the training process
def training_command(overrides: list[str], run_dir: str) -> list[str]:
    """`python -m scaleflow <the same overrides>` in the same run dir (Hydra's .hydra/ is the
    launcher's; the process logs to jax.log)."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.run.dir", "hydra.output_subdir",
                                                                      "hydra.job.name"))]
    return [sys.executable, "-m", "scaleflow", *kept, f"hydra.run.dir={_quote(os.path.abspath(run_dir))}",
            "hydra.output_subdir=null", "hydra.job.name=jax"]


def _quote(value: str) -> str:
    """A Hydra override value: quoted unless it is plainly safe."""
    if re.fullmatch(r"[\w/.\-:+@~]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def training_environment(cfg, environ: dict) -> dict:
    """The training process' environment: the JAX backend, and on a CPU the host device count
    (`hardware.logical_devices`), both before anything imports Keras or JAX."""
    env = {**environ, "KERAS_BACKEND": "jax", JAX_PROCESS_ENV: "1", "PYTHONUNBUFFERED": "1"}
    if cfg.hardware.name == "cpu":
        n = int(cfg.hardware.logical_devices)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
        env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}={n}"])
        env["JAX_PLATFORMS"] = "cpu"  # no probing for accelerators that a CPU target does not use
        env["_devices"] = str(n)
    return env


def _die_with_parent() -> None:  # in the child, before exec: a kill -9 of the launcher ends it too
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: nothing more to do
        pass


def run_child(command: list[str], env: dict) -> int:
    """Run the training process to its end; SIGTERM/SIGINT sent to this process are passed on once
    (the training process finishes its step, keeps its checkpoint and exits 143/130)."""
    child = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)

    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if child.poll() is None:
            child.kill()


# ------------------------------------------------------------------------------ what the loop sees
class JaxDistribution(Distribution):
    """A Keras `ModelParallel` distribution on a ("batch", "model") mesh, every variable laid out by
    the run's `LayoutPlan`. One input pipeline per process, each giving its part of the global batch
    (Keras assembles the global array over the data axis).

    Args:
        name: the strategy's name.
        mesh_shape: (D, M).
        devices: the D x M JAX devices.
        plan: the layout rules (strategies/layout.py).
        num_processes / process_id: the JAX processes and this one's index (0 writes).
    """

    backend = "jax"

    def __init__(self, name: str, mesh_shape: tuple[int, int], devices: list, plan, num_processes: int = 1,
                 process_id: int = 0):
        self.name, self.mesh_shape, self.devices, self.plan = name, tuple(mesh_shape), list(devices), plan
        self.num_workers, self.worker_index = num_processes, process_id
        self.num_replicas = mesh_shape[0]
        self.num_pipelines, self.pipeline_index = input_pipelines(mesh_shape[0], num_processes, process_id)
        self.keras_distribution = _planned_model_parallel(self.mesh_shape, self.devices, plan)

    def scope(self) -> Any:
        return self.keras_distribution.scope()

    def active(self) -> Any:
        # The whole run (fit, evaluate, export) under the distribution: Keras lays out each batch over
        # the data axis only while a distribution is current.
        return self.keras_distribution.scope()

    def distribute(self, fn: Callable[[Any], Any]) -> Any:
        import tensorflow as tf

        return fn(tf.distribute.InputContext(self.num_pipelines, self.pipeline_index, self.num_pipelines))

    def placement(self, model: Any) -> dict:
        """After the model and optimizer are built, before training: check that every rule matched
        and fit (ConfigError, exit 2), then read where each variable really is (JAX shardings)."""
        self.plan.check()
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its slots follow their variables' layouts
        return placement_report(model, self.plan, self.devices)

    def describe(self) -> dict:
        data, model = self.mesh_shape
        # Each global batch is laid out over the data axis (dimension 0), what Keras' JAX trainer does
        # with every batch while this distribution is current.
        batch_axes = list(self.keras_distribution.get_data_layout((1, 1)).axes)
        return {**super().describe(), "backend": "jax",
                "mesh": {"shape": [data, model], "axes": list(MESH_AXES),
                         "devices": [str(d) for d in self.devices], "batch_layout": batch_axes}}


def input_pipelines(data: int, processes: int, process_id: int) -> tuple[int, int]:
    """(input pipelines, this process' pipeline) for a mesh with `data` rows over `processes` processes.

    The mesh takes JAX's devices in order (process by process), so a process holds whole rows of the
    data axis when there are at most `data` processes (one pipeline each: global batch / processes),
    and a part of one row when there are more: the processes of one row read the same pipeline
    (`jax.make_array_from_process_local_data` expects identical data from them)."""
    pipelines = min(data, processes)
    return pipelines, process_id * pipelines // processes


def _planned_model_parallel(mesh_shape, devices, plan):
    """keras.distribution.ModelParallel whose variable layouts come from `plan` (full-path regex
    rules, user over default, each checked) instead of Keras' LayoutMap (which replicates silently)."""
    from keras.distribution import DeviceMesh, LayoutMap, ModelParallel, TensorLayout

    mesh = DeviceMesh(tuple(mesh_shape), list(MESH_AXES), devices=devices)

    class PlannedModelParallel(ModelParallel):
        def get_variable_layout(self, variable):
            if getattr(variable, "_layout", None) is not None:  # optimizer slots: their variable's
                return variable._layout
            axes = plan.resolve(variable.path, variable.shape)
            return TensorLayout(list(axes) if axes else [None] * len(variable.shape), self.device_mesh)

    # Sharding over processes is scaleflow's shard plan (one input pipeline per process), not Keras'.
    return PlannedModelParallel(layout_map=LayoutMap(mesh), batch_dim_name=DATA_AXIS, auto_shard_dataset=False)


def placement_report(model, plan, devices) -> dict:
    """run.json's layout and memory facts, read from the JAX arrays themselves: each variable's
    sharding spec, and the bytes every device holds of the parameters and of the optimizer state."""
    def per_device(variables) -> dict[str, int]:
        totals = {str(d): 0 for d in devices}
        for v in variables:
            for shard in v.value.addressable_shards:
                totals[str(shard.device)] = totals.get(str(shard.device), 0) + int(shard.data.nbytes)
        return totals

    def spec(v) -> list:
        sharding = getattr(v.value, "sharding", None)
        spec = list(getattr(sharding, "spec", []) or [])
        return [s if s is None or isinstance(s, str) else list(s) for s in spec] + [None] * (len(v.shape) - len(spec))

    params = per_device(model.weights)
    optimizer = per_device(model.optimizer.variables)
    replicated = sum(int(v.value.nbytes) for v in model.weights)
    report = plan.report()
    report["variables"] = {v.path: {"shape": list(v.shape), "sharding": spec(v),
                                    **({"rule": report["variables"][v.path]["rule"],
                                        "from": report["variables"][v.path]["from"]}
                                       if v.path in report["variables"] else {})}
                           for v in model.weights}
    return {"layout": report,
            "parameter_bytes_per_device": params, "optimizer_bytes_per_device": optimizer,
            "parameter_bytes_replicated": replicated,
            "parameter_fraction_per_device": round(max(params.values()) / replicated, 4) if replicated else None}
