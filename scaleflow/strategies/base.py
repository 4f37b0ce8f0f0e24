"""The strategy extension point: a strategy answers every question scaleflow asks about parallelism.

Nothing outside a strategy's own module branches on its name. The planner, `strategy=auto`,
`mode=shards`, validation and the training run ask the strategy class instead:

    question                                   asked by                     hook
    how are processes, replicas, input          mode=plan, mode=shards,      topology(cfg, figures)
      pipelines and devices laid out?             the run.json step prediction
    how is one step split: data x model axes,   mode=plan (memory per device, parallelism(cfg, figures)
      pipeline stages, micro-batches, layout?     collectives, bubble), run.json
    is it worth recommending on this hardware?  mode=plan's recommendation   suits(cfg, figures)
    which strategy really runs (auto chooses)?  mode=plan, mode=shards       resolved(cfg)
    does it claim this machine, how strongly?   strategy=auto                claim(cfg, environment)
    what must the global batch divide by?       validation (before TF)       batch_multiple(cfg)
    how many steps may one call run?            validation, the run          max_steps_per_execution
    does this process launch the job's          mode=train                   launches(cfg), launch(...)
      processes, or train in it?
    what must a training process do before      the run                      join(cfg)
      TensorFlow initialises (connect)?
    how many of its processes share this host   the run (thread pools)       local_processes(cfg, environ)
    does this process write run.json/export?    the run, before TF           is_writer(cfg)
    what does the training loop use?            the run                      create(cfg) -> Distribution
    which config choices does it imply?         the command line             implies

The resume policy is the same for every multi-process strategy and lives in one place
(`scaleflow.training.setup.align_backups`, applied by `mode=train` before any launch).

Example (a strategy that mirrors over the logical CPU devices of this process):

    class TwoCPUs(Strategy):
        name = "two_cpus"

        @classmethod
        def topology(cls, cfg, figures):
            return Topology(hosts=1, processes=1, replicas=2, pipelines=1)

        @classmethod
        def claim(cls, cfg, environment):
            return None  # never chosen by strategy=auto

        def create(self, cfg):
            import tensorflow as tf
            return TFDistribution(self.name, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))

    # pyproject.toml:  [project.entry-points."scaleflow.strategies"]  two_cpus = "my_pkg.two:TwoCPUs"
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Tuple

from scaleflow.config.schema import StrategyConfig
from scaleflow.errors import ConfigError


# ------------------------------------------------------------------------------------ what it is
@dataclass(frozen=True)
class Topology:
    """How a strategy lays a job out.

    Args:
        hosts: machines the job spans.
        processes: training processes (workers, ranks) over all hosts.
        replicas: model replicas over all processes; the global batch is split between them.
        pipelines: input pipelines over all processes; the records are split between them.
        devices_per_replica: devices one replica spans (1 for data parallelism).

    Example:
        Topology(hosts=1, processes=2, replicas=2, pipelines=2)  # two local worker processes
    """

    hosts: int
    processes: int
    replicas: int
    pipelines: int
    devices_per_replica: int = 1

    @property
    def replicas_per_host(self) -> int:
        return math.ceil(self.replicas / max(1, self.hosts))

    def report(self) -> dict:
        return asdict(self)


# The mesh axes every model-parallel strategy and the planner name (Keras' DeviceMesh axis names).
DATA_AXIS = "batch"
MODEL_AXIS = "model"

Axes = Tuple[Optional[str], ...]  # one mesh axis name (or None: not split) per dimension of a variable


@dataclass(frozen=True)
class Parallelism:
    """How a strategy splits one training step: over the data axis, the model axis and pipeline stages.

    The three kinds multiply: a replica spans `model x stages` devices, and `data` replicas each
    take `global batch / data` examples. Pure data parallelism is `Parallelism(data=replicas)`.

    Args:
        data: replicas along the data axis (`DATA_AXIS`); the global batch is split between them and
            their gradients are all-reduced.
        model: devices along the model axis (`MODEL_AXIS`) that share one replica's variables; a
            variable the layout splits on this axis keeps 1/model of itself on each.
        stages: pipeline stages one replica is cut into, each on its own device(s).
        micro_batches: micro-batches one step's per-replica batch is cut into for the pipeline
            schedule (GPipe); 1 without stages.
        layout: variable-path pattern -> axes, overriding the model's default layout rules
            (`Model.layout_rules`). A pattern is the variable path or a regular expression matching
            all of it (`re.fullmatch`, as Keras' `LayoutMap` matches); axes name a mesh axis or None per
            dimension. Given as a mapping or as (pattern, axes) pairs; stored as sorted pairs.
        cuts: the S-1 layer names after which the pipeline cuts the model (from the model's cut
            points), in model order; () when the strategy leaves the choice to the planner, which
            then balances the stages' FLOPs.

    Properties:
        devices: data x model x stages.
        mesh: the (data, model) shape of the device mesh, axes (DATA_AXIS, MODEL_AXIS).
        bubble: the idle share of a pipeline step, (S-1)/(K+S-1) (0 without stages).
        rules: the layout as a dict.

    Example:
        Parallelism(data=2, model=2, layout={"dense_0/kernel": (None, "model")})  # hybrid 2x2
        Parallelism(stages=2, micro_batches=4, cuts=("dense_1",))                # a GPipe pipeline
    """

    data: int = 1
    model: int = 1
    stages: int = 1
    micro_batches: int = 1
    layout: Any = ()
    cuts: Tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("data", "model", "stages", "micro_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Expected Parallelism.{name} to be an integer >= 1, received: {value!r}")
        pairs = self.layout.items() if isinstance(self.layout, Mapping) else self.layout
        normalised = tuple(sorted((str(k), tuple(None if a is None else str(a) for a in v)) for k, v in pairs))
        object.__setattr__(self, "layout", normalised)  # hashable and order-independent
        object.__setattr__(self, "cuts", tuple(str(c) for c in self.cuts))
        if self.cuts and len(self.cuts) != self.stages - 1:
            raise ValueError(f"Expected Parallelism.cuts to name stages - 1 = {self.stages - 1} layers, "
                             f"received: {list(self.cuts)}")

    @property
    def devices(self) -> int:
        return self.data * self.model * self.stages

    @property
    def mesh(self) -> tuple[int, int]:
        return self.data, self.model

    @property
    def bubble(self) -> float:
        return (self.stages - 1) / (self.micro_batches + self.stages - 1)

    @property
    def rules(self) -> dict[str, Axes]:
        return dict(self.layout)

    def report(self) -> dict:
        return {"data": self.data, "model": self.model, "stages": self.stages,
                "micro_batches": self.micro_batches, "mesh": list(self.mesh), "devices": self.devices,
                "axes": [DATA_AXIS, MODEL_AXIS], "bubble": self.bubble,
                "layout": {k: list(v) for k, v in self.layout}, "cuts": list(self.cuts)}


@dataclass(frozen=True)
class Claim:
    """A strategy's bid to be chosen by `strategy=auto`: the strongest claim wins (ties: by name).

    Args:
        strength: how sure the strategy is that it is the right one here (see the CLAIM_* scale).
        reason: what it saw, for the log ("hardware.logical_devices=2 CPU replicas").
    """

    strength: int
    reason: str


# The scale claims are made on, strongest first. A plugin picks the level that matches what it saw.
CLAIM_HARDWARE = 100  # the hardware target only runs under this strategy (a TPU)
CLAIM_CLUSTER = 90  # the environment describes a cluster this strategy joins (TF_CONFIG)
CLAIM_LAUNCHED = 80  # this process was started by the strategy's own launcher (horovodrun)
CLAIM_PROCESSES = 50  # the config asks for several processes (strategy.num_workers > 1)
CLAIM_HOSTS = 40  # the hardware has several hosts
CLAIM_DEVICES = 30  # one host, several devices
CLAIM_ACCELERATORS = 20  # several accelerators are visible
CLAIM_ANYWHERE = 0  # runs anywhere: the fallback

# `Strategy.process_rank` of a worker the strategy's own launcher started: the launcher holds the run
# dir's lock for the whole job, so the worker takes none.
UNDER_LAUNCHER = -1


@dataclass(frozen=True)
class Environment:
    """What `strategy=auto` knows about where it runs, without importing TensorFlow.

    Args:
        environ: the process environment (TF_CONFIG, HOROVOD_RANK, SLURM_* ...).
        num_gpus: GPUs TensorFlow sees, or None when TensorFlow is not imported yet.
    """

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    num_gpus: int | None = None


def check_global_batch(batch_size: int, multiple: int, why: str) -> None:
    """The one global-batch rule: the batch must split evenly `multiple` ways (replicas, pipelines)."""
    if multiple > 1 and batch_size % multiple:
        raise ConfigError("data.batch_size", batch_size, f"a multiple of {multiple} ({why})",
                          "The global batch is split evenly between them")


# ------------------------------------------------------------------------- what the loop sees
class Distribution:
    """Parallelism as the training loop sees it. Defaults describe one process, one replica.

    Attributes:
        name: the strategy's name (for logs and run.json).
        num_workers: processes; worker_index: this process (0 is the chief: it writes run.json,
            the export and the final summaries).
        num_replicas: replicas over all workers (the global batch is split between them).
        num_pipelines: input pipelines over all workers (the records are split between them).
        jit_compile: None lets Keras decide; False where the strategy's ops have no XLA kernels.
        max_steps_per_execution: None, or the most steps one `fit` call may run under it.
        backend: the Keras backend the run trains on ("tensorflow", or "jax" for a device mesh).
    """

    name: str = "default"
    backend: str = "tensorflow"
    num_workers: int = 1
    worker_index: int = 0
    num_replicas: int = 1
    num_pipelines: int = 1
    jit_compile: bool | None = None
    max_steps_per_execution: int | None = None

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    def scope(self) -> Any:
        """The context in which the model and optimizer are built."""
        return contextlib.nullcontext()

    def active(self) -> Any:
        """The context the whole training run (fit, evaluate, export) runs in: what the strategy
        changes in other libraries for its lifetime, undone when the run ends (e.g. Keras fixes)."""
        return contextlib.nullcontext()

    def distribute(self, fn: Callable[[Any], Any]) -> Any:
        """A dataset for `model.fit` from fn(input_context) -> this pipeline's per-replica batches."""
        return fn(None)

    def wrap_optimizer(self, optimizer: Any) -> Any:
        return optimizer

    def prepare_model(self, model: Any) -> Any:
        """The model to compile and train, given the one the task built (under `scope`): e.g. cut
        into stages and placed on devices (strategy=pipeline). The default: the model itself."""
        return model

    def callbacks(self) -> list:
        """Keras callbacks the strategy needs during `fit` (broadcasts, watchdogs)."""
        return []

    def placement(self, model: Any) -> dict:
        """Called once the model is built and compiled, before training: check where its variables
        went (raise ConfigError, exit 2, for a layout that cannot apply) and return facts for
        run.json's `strategy` block (e.g. layout, bytes per device). Default: nothing to say."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name, "num_workers": self.num_workers, "worker_index": self.worker_index,
                "num_replicas": self.num_replicas, "num_pipelines": self.num_pipelines}

    def tuning(self) -> dict:
        """The communication settings this distribution chose (gradient packing, fusion, ...), each
        with why, for run.json's `tuning.collectives`; {} when it has no collectives."""
        return {}


class TFDistribution(Distribution):
    """A tf.distribute.Strategy. Input goes through `distribute_datasets_from_function` with
    TensorFlow's auto-sharding off: scaleflow's shard plan decides what each pipeline reads.

    Args:
        name: the strategy's name.
        strategy: the tf.distribute.Strategy.
        num_workers / worker_index: processes and this one's index (one input pipeline each).
        max_steps_per_execution: see `Distribution`.
    """

    def __init__(self, name: str, strategy: Any, num_workers: int = 1, worker_index: int = 0,
                 max_steps_per_execution: int | None = None):
        self.name, self.strategy = name, strategy
        self.num_workers, self.worker_index = num_workers, worker_index
        self.num_replicas = strategy.num_replicas_in_sync
        self.num_pipelines = num_workers
        self.max_steps_per_execution = max_steps_per_execution

    def scope(self) -> Any:
        return self.strategy.scope()

    def distribute(self, fn: Callable[[Any], Any]) -> Any:
        import tensorflow as tf

        if self.num_replicas == 1 and self.num_workers == 1:
            return fn(tf.distribute.InputContext(1, 0, 1))
        return self.strategy.distribute_datasets_from_function(fn)


# --------------------------------------------------------------------------------- the strategy
class Strategy(abc.ABC):
    """Base class of every strategy (built-in or plugin). Subclasses set `name` and implement
    `topology`, `claim` and `create`; the other hooks have defaults for one-process strategies.

    Class attributes:
        name: the option name (`strategy=<name>`), equal to the entry point's name.
        Config: the dataclass typing the `strategy` config node (extend `StrategyConfig`).
        conf: `pkg://...` search path of the plugin's config files (`strategy/<name>.yaml`), or None.
        implies: config choices this strategy implies unless the user set them, e.g.
            `{"hardware": "tpu"}`; applied once per command, before composing.
        max_steps_per_execution: None, or the most steps one `fit` call may run (checked in validation
            against `trainer.steps_per_execution`, and capped in the run for `auto`).
        collective_timeline: True when the strategy's runtime can write a timeline of its
            collectives (`profile.timeline=true`; Horovod's HOROVOD_TIMELINE).
        backend: the Keras backend its training processes run (`KERAS_BACKEND`): "tensorflow", or
            "jax" for the keras.distribution strategies (model_parallel, hybrid). The planner's
            optimizer workspace depends on it (TensorFlow keeps full-size Adam temporaries, XLA fuses them).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = StrategyConfig
    conf: ClassVar[str | None] = None
    implies: ClassVar[Mapping[str, str]] = {}
    max_steps_per_execution: ClassVar[int | None] = None
    collective_timeline: ClassVar[bool] = False
    backend: ClassVar[str] = "tensorflow"

    # ---------------------------------------------------------- questions answered from the config
    @classmethod
    @abc.abstractmethod
    def topology(cls, cfg: Any, figures: Any) -> Topology:
        """The layout this strategy gives the job on the hardware described by `figures`.

        Args:
            cfg: the composed config.
            figures: `scaleflow.planning.topology.Figures` (hosts, devices_per_host, ...).
        Returns:
            A `Topology`. Pure Python: no TensorFlow.
        Example:
            Topology(hosts=1, processes=1, replicas=figures.devices_per_host, pipelines=1)
        """

    @classmethod
    def scaled(cls, cfg: Any, figures: Any, base: Topology, replicas: int) -> Topology:
        """`base` scaled to `replicas` replicas (for the planner's scaling curve): hosts fill one
        after the other; one pipeline per process.

        Args:
            cfg, figures: as for `topology`.
            base: this strategy's topology for the config.
            replicas: the replica count to scale to.
        Returns:
            A `Topology` with `replicas` replicas.
        """
        per_host = replicas if figures.single_host else figures.devices_per_host
        hosts = max(1, math.ceil(replicas / max(1, per_host)))
        processes = 1 if base.processes == 1 else max(1, replicas // max(1, base.replicas // base.processes))
        return Topology(hosts, processes, replicas, processes, base.devices_per_replica)

    @classmethod
    def parallelism(cls, cfg: Any, figures: Any) -> Parallelism:
        """How this strategy splits one step on the hardware described by `figures`: replicas on the
        data axis, devices on the model axis, pipeline stages and micro-batches, and the layout
        overrides (`strategy.layout`). The planner derives memory per device and the collectives of
        a step from it; it must agree with `topology` (replicas == data, devices_per_replica ==
        model x stages).

        Args:
            cfg, figures: as for `topology`.
        Returns:
            A `Parallelism`. Pure Python: no TensorFlow, no JAX. The default: pure data parallelism,
            `Parallelism(data=topology.replicas, model=topology.devices_per_replica)`.
        Example:
            mesh = list(cfg.strategy.mesh)  # a hybrid strategy, strategy.mesh=[2,2]
            return Parallelism(data=mesh[0], model=mesh[1], layout=dict(cfg.strategy.get("layout") or {}))
        """
        topology = cls.topology(cfg, figures)
        return Parallelism(data=topology.replicas, model=topology.devices_per_replica)

    @classmethod
    def split_candidates(cls, devices: int, global_batch: int, blocks: int) -> list[Parallelism]:
        """The ways this strategy can split one model over `devices` devices, for `mode=plan`'s
        recommendation when the model does not fit one device.

        Args:
            devices: how many devices the split uses (the planner tries powers of two).
            global_batch: `data.batch_size` (a data axis must divide it).
            blocks: how many pipeline stages the model can be cut into at most.
        Returns:
            `Parallelism`s using exactly `devices` devices. Default: none (data-parallel strategies
            copy the whole model onto every device).
        Example:
            return [Parallelism(model=devices)]  # a 1 x M mesh
        """
        return []

    @classmethod
    def split_overrides(cls, split: Parallelism, cuts: list[str] | None = None) -> str:
        """The `strategy.*` overrides that make this strategy run `split` (one of its
        `split_candidates`); `cuts` are the layers the planner balanced pipeline stages at.

        Example:
            return f"strategy.mesh=[{split.data},{split.model}]"
        """
        return ""

    @classmethod
    def suits(cls, cfg: Any, figures: Any) -> bool:
        """Whether `mode=plan` should consider recommending this strategy on this hardware.

        Returns:
            By default: True unless the hardware only runs under another strategy
            (`figures.required_strategy`, e.g. a TPU needs strategy=tpu).
        """
        return figures.required_strategy in (None, cls.name)

    @classmethod
    @abc.abstractmethod
    def claim(cls, cfg: Any, environment: Environment) -> Claim | None:
        """This strategy's bid to be chosen by `strategy=auto`, or None when it does not apply.

        Args:
            cfg: the composed config (read with `.get` for keys other hardware targets lack).
            environment: see `Environment`.
        Returns:
            A `Claim` (strength on the CLAIM_* scale, and why), or None.
        Example:
            if cfg.hardware.name == "tpu":
                return Claim(CLAIM_HARDWARE, "hardware=tpu")
            return None
        """

    @classmethod
    def resolved(cls, cfg: Any) -> tuple[str, str]:
        """The strategy that really runs and why: itself, unless it chooses another (`auto`).

        Returns:
            (strategy name, reason), e.g. ("mirrored", "strategy=mirrored").
        """
        return cls.name, f"strategy={cls.name}"

    @classmethod
    def batch_multiple(cls, cfg: Any) -> tuple[int, str] | None:
        """What the global batch must be a multiple of under this strategy, from the config alone.

        Returns:
            (count, what it counts) or None when nothing is known before TensorFlow runs.
        Example:
            return cfg.strategy.num_workers, f"strategy.num_workers={cfg.strategy.num_workers} workers"
        """
        return None

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Cross-field rules of this strategy, before TensorFlow is imported: raise ConfigError.

        The base checks the batch rule (`batch_multiple`) and `max_steps_per_execution`; a subclass
        adds its own rules and calls `super().validate(cfg)`.
        """
        multiple = cls.batch_multiple(cfg)
        if multiple is not None:
            check_global_batch(cfg.data.batch_size, *multiple)
        spe, limit = cfg.trainer.steps_per_execution, cls.max_steps_per_execution
        if limit is not None and spe != "auto" and int(spe) > limit:
            raise ConfigError("trainer.steps_per_execution", spe, f"'auto' or at most {limit} with strategy={cls.name}",
                              f"strategy={cls.name} runs at most {limit} step(s) per call of the training function")

    # ------------------------------------------------------------------------- process lifecycle
    def launches(self, cfg: Any) -> bool:
        """True when this process starts the job's processes (and waits for them) instead of
        training; False when it trains, alone or as one worker of a cluster. No TensorFlow."""
        return False

    def launch(self, cfg: Any, run_dir: str) -> int:
        """Start the job's processes in `run_dir`, wait for them; return their combined exit status.
        Called only when `launches(cfg)`, after the backups of an interrupted run were aligned."""
        raise NotImplementedError(f"strategy={self.name} does not launch processes")

    def is_writer(self, cfg: Any) -> bool:
        """Whether this process writes run.json and the export (the chief), known from the
        environment before TensorFlow runs. The default: the only process does."""
        return True

    @classmethod
    def process_rank(cls, cfg: Any, environ: Mapping[str, str]) -> int | None:
        """Which process of a multi-process job of this strategy this one is, from its environment,
        before TensorFlow. The command line locks the run dir once per rank (`.scaleflow.lock` for
        rank 0, `.scaleflow-rank<r>.lock` for rank r), so the same job started twice is refused.

        Args:
            cfg: the composed config.
            environ: the process environment.
        Returns:
            The rank a cluster manager gave this process (a TF_CONFIG, horovodrun's HOROVOD_RANK),
            UNDER_LAUNCHER for a worker this strategy's own launcher started, or None when the
            environment shows no job of this strategy (the default: a single process).
        Example:
            rank = environ.get("HOROVOD_RANK", "")
            return int(rank) if rank.isdigit() else None
        """
        return None

    @classmethod
    def local_processes(cls, cfg: Any, environ: Mapping[str, str]) -> int:
        """How many of this job's training processes run on this host, this one included, known
        before TensorFlow initialises: each gets its share of the cores' thread pools
        (hardware/threads.py). The default: 1 (one process per host)."""
        return 1

    @classmethod
    def pins_processes(cls, cfg: Any) -> bool:
        """Whether each of this strategy's processes on a host runs on its own cores unless
        `hardware.pin_processes` says otherwise (hardware/threads.py has the measurements). The
        default: no, the kernel places every thread."""
        return False

    @classmethod
    def local_rank(cls, cfg: Any, environ: Mapping[str, str]) -> int | None:
        """This process's place (0 .. local_processes - 1) among the job's processes on this host,
        from its environment, before TensorFlow: `hardware.pin_processes` gives each place its own
        cores. The default: None (one process per host: nothing to share)."""
        return None

    def join(self, cfg: Any) -> None:
        """In every training process, before the hardware step initialises TensorFlow: connect to
        the peers if the strategy needs to (collective ops must be configured at program startup)."""

    @abc.abstractmethod
    def create(self, cfg: Any) -> Distribution:
        """The `Distribution` the training loop uses; called in every training process after
        `join` and the hardware step.

        Args:
            cfg: the validated config.
        Returns:
            A `Distribution` (a `TFDistribution` for tf.distribute strategies).
        """


def process_topology(cfg: Any, figures: Any, replicas_per_process: int) -> Topology:
    """The topology of a one-process-per-worker strategy: `strategy.num_workers` processes (on a
    multi-host target with num_workers=1: one per host), each with one input pipeline."""
    num_workers = int(cfg.strategy.num_workers)
    processes = num_workers if num_workers > 1 else figures.hosts
    hosts = min(processes, figures.hosts)
    return Topology(hosts, processes, processes * replicas_per_process, processes)
