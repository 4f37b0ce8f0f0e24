"""Pipeline parallelism on the TensorFlow backend: the model cut into stages over devices (GPipe).

`strategy=pipeline strategy.stages=S strategy.micro_batches=K` cuts the model at S-1 of the cut points
its plugin declares (`Model.cut_points`; the built-ins: between blocks) and places stage s on device s.
Every training step splits each replica's batch into K micro-batches; each micro-batch goes forward
through the stages and back, and the K gradients are summed into one optimizer step on the whole
batch, so the result is the same as one device on the same global batch (GPipe's synchronous
schedule; TensorFlow's executor overlaps stage s of micro-batch k+1 with stage s+1 of micro-batch k).

What TensorFlow 2.21 / Keras 3.15 need for the stages to really run where they are placed (measured,
see PITFALLS.md "Model parallelism"):
  - variables: re-created on their stage's device after the model is built (a Functional model
    creates them wherever the plugin's code ran);
  - backward pass: one GradientTape per stage and micro-batch, its gradient taken under the stage's
    device. One tape over the whole model puts every backward op on CPU:0. With
    `strategy.recompute=true` (GPipe's re-materialisation) each stage but the last runs in a
    tf.custom_gradient that keeps only its input and recomputes the stage under its device for the
    backward pass: less activation memory, but a recomputation would redraw dropout masks and update
    BatchNormalization statistics twice, so those are refused; the default keeps the activations.
  - optimizer slots (Adam's m and v) created under their variable's device;
  - jit_compile off (XLA refuses variables on another device).

`strategy.data_parallel=mirrored|multi_worker` makes it TensorFlow's hybrid (replicas x stages):
MirroredStrategy (or MultiWorkerMirrored) over the first device of each replica, each replica's
stages on the devices after it, each gradient copied back to its variable's device before the
all-reduce. Variables stay mirrored on the replica's first device: the stages split compute and
activations, not parameters.

Example:
    python -m scaleflow strategy=pipeline strategy.stages=2 strategy.micro_batches=4 hardware.logical_devices=2
    python -m scaleflow strategy=pipeline strategy.data_parallel=mirrored hardware.logical_devices=4
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, List, Optional

from scaleflow import registry
from scaleflow.config.schema import StrategyConfig, bounded, choice, items
from scaleflow.errors import ConfigError, ScaleflowError
from scaleflow.strategies.base import Claim, Distribution, Parallelism, Strategy, TFDistribution, Topology

log = logging.getLogger("scaleflow")

DATA_PARALLEL = ("none", "mirrored", "multi_worker")


@dataclass
class PipelineConfig(StrategyConfig):
    stages: int = bounded(2, min=2, max=64)  # devices one replica's model is cut over
    micro_batches: int = bounded(4, min=1, max=65536)  # per replica and step; must divide its batch
    data_parallel: str = choice("none", *DATA_PARALLEL)  # replicas of the whole pipeline
    replicas: Optional[int] = bounded(None, min=1, max=1024)  # mirrored: null = devices // stages
    cuts: List[str] = items([])  # S-1 of the model's cut points; empty: spread evenly
    # GPipe's re-materialisation: each stage but the last keeps only its input and recomputes its
    # forward pass (under its device, in a tf.custom_gradient) for the backward pass. Less activation
    # memory, one more forward per stage; not with dropout or BatchNormalization (see validate).
    recompute: bool = False


# ------------------------------------------------------------------ answers from the config alone
def model_cut_points(cfg) -> list[str]:
    """The model plugin's cut points for this config (no TensorFlow)."""
    return list(registry.get("model", cfg.model.name)().cut_points(cfg.model))


def chosen_cuts(cfg) -> list[str]:
    """The S-1 cut points used: `strategy.cuts`, else spread evenly over the model's cut points."""
    s = cfg.strategy
    if s.cuts:
        return list(s.cuts)
    points, stages = model_cut_points(cfg), s.stages
    return [points[round(i * (len(points) + 1) / stages) - 1] for i in range(1, stages)]


def check_micro_batches(per_replica: int, micro_batches: int, why: str) -> None:
    """Each replica's batch must split into `micro_batches` equal micro-batches."""
    if per_replica % micro_batches:
        divisors = [d for d in range(1, min(per_replica, 64) + 1) if per_replica % d == 0]
        raise ConfigError("strategy.micro_batches", micro_batches,
                          f"a divisor of the per-replica batch {per_replica} ({why}), e.g. one of {divisors}",
                          "Each replica's batch is split into equal micro-batches")


def local_replicas(cfg) -> int:
    """Pipeline replicas in one process."""
    s = cfg.strategy
    if s.data_parallel != "mirrored":
        return 1
    return s.replicas or max(1, cfg.hardware.get("logical_devices", 1) // s.stages)


def total_replicas(cfg) -> int:
    s = cfg.strategy
    return s.num_workers if s.data_parallel == "multi_worker" else local_replicas(cfg)


def stage_device(replica_device: str, stage: int) -> str:
    """The device of `stage` in the replica whose first device is `replica_device`: the same job and
    task, device index + stage ('/job:w/task:1/device:CPU:0', 1 -> '/job:w/task:1/device:CPU:1')."""
    match = re.search(r"(?i)(device:)?(CPU|GPU|TPU):(\d+)$", replica_device)
    if match is None:
        raise ScaleflowError(f"strategy=pipeline: cannot place stages relative to device {replica_device!r}")
    return f"{replica_device[:match.start(3)]}{int(match.group(3)) + stage}"


# ---------------------------------------------------------------------------------- the strategy
class Pipeline(Strategy):
    """GPipe pipeline parallelism over `strategy.stages` devices, `strategy.micro_batches` per step;
    with `strategy.data_parallel=mirrored|multi_worker`, replicas x stages (TensorFlow's hybrid).

    Example: `python -m scaleflow strategy=pipeline strategy.stages=2 hardware.logical_devices=2`
    """

    name = "pipeline"
    Config = PipelineConfig
    conf = None

    def __init__(self):
        self._inner: Strategy | None = None  # the data-parallel strategy that owns the processes

    # ---------------------------------------------------------- questions answered from the config
    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        s = cfg.strategy
        if s.data_parallel == "multi_worker":
            processes = s.num_workers
            return Topology(hosts=min(processes, figures.hosts), processes=processes, replicas=processes,
                            pipelines=processes, devices_per_replica=s.stages)
        replicas = 1
        if s.data_parallel == "mirrored":
            replicas = s.replicas or max(1, figures.devices_per_host // s.stages)
        return Topology(hosts=1, processes=1, replicas=replicas, pipelines=1, devices_per_replica=s.stages)

    @classmethod
    def parallelism(cls, cfg, figures) -> Parallelism:
        t = cls.topology(cfg, figures)
        cuts = tuple(chosen_cuts(cfg)) if cfg.strategy.stages > 1 else ()  # mode=plan cuts where the run does
        return Parallelism(data=t.replicas, stages=cfg.strategy.stages, micro_batches=cfg.strategy.micro_batches,
                           cuts=cuts)

    @classmethod
    def split_candidates(cls, devices: int, global_batch: int, blocks: int) -> list[Parallelism]:
        """One stage per device (when the model has that many blocks), with the largest K <= 4S
        micro-batches dividing the batch: GPipe keeps its bubble under 20% from K >= 4S."""
        if devices > blocks:
            return []
        k = next((k for k in range(min(4 * devices, global_batch), 0, -1) if global_batch % k == 0), None)
        return [Parallelism(stages=devices, micro_batches=k)] if k else []

    @classmethod
    def split_overrides(cls, split: Parallelism, cuts: list[str] | None = None) -> str:
        out = f"strategy.stages={split.stages} strategy.micro_batches={split.micro_batches}"
        return out + (f" strategy.cuts=[{','.join(cuts)}]" if cuts else "")

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        return None  # never chosen by strategy=auto

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str] | None:
        s = cfg.strategy
        if s.data_parallel == "multi_worker" and s.cluster != "local":
            return None  # the cluster's size is known once it is joined
        replicas = total_replicas(cfg)
        return replicas * s.micro_batches, (f"{replicas} pipeline replica(s) x strategy.micro_batches="
                                            f"{s.micro_batches}")

    @classmethod
    def validate(cls, cfg) -> None:
        s, hw = cfg.strategy, cfg.hardware
        if s.replicas is not None and s.data_parallel != "mirrored":
            raise ConfigError("strategy.replicas", s.replicas, "null unless strategy.data_parallel=mirrored",
                              "multi_worker runs one pipeline replica per worker (strategy.num_workers)")
        if s.recompute and cfg.model.get("dropout"):
            raise ConfigError("strategy.recompute", True, "false with model.dropout > 0",
                              "Recomputing a stage draws new dropout masks: its gradient would not be the forward "
                              "pass's")
        if cfg.trainer.jit_compile is True:
            raise ConfigError("trainer.jit_compile", True, "'auto' or false with strategy=pipeline",
                              "XLA refuses variables placed on another device (\"located in device CPU:1 from device "
                              "CPU:0\"): the pipeline runs without it")
        cls._check_cuts(cfg)
        if hw.name == "cpu":  # other targets' device counts are known only to TensorFlow (checked in create)
            needed = s.stages * local_replicas(cfg)
            if hw.logical_devices < needed:
                raise ConfigError("hardware.logical_devices", hw.logical_devices,
                                  f"at least {needed} (strategy.stages={s.stages} x {local_replicas(cfg)} "
                                  "replica(s) per process)",
                                  f"Split the CPU into devices: hardware.logical_devices={needed}")
        if s.data_parallel != "multi_worker" or s.cluster == "local":  # a joined cluster's size is known later
            replicas, batch = total_replicas(cfg), cfg.data.batch_size
            if batch % replicas:
                raise ConfigError("data.batch_size", batch, f"a multiple of {replicas} (the pipeline replicas)",
                                  "The global batch is split evenly between the replicas")
            check_micro_batches(batch // replicas, s.micro_batches, f"data.batch_size={batch} / {replicas} replica(s)")
        if s.data_parallel == "multi_worker":  # its own rules: TF_CONFIG, steps per call, workers
            registry.get("strategy", "multi_worker").validate(cfg)
        super().validate(cfg)

    @classmethod
    def _check_cuts(cls, cfg) -> None:
        s, model = cfg.strategy, cfg.model.name
        points = model_cut_points(cfg)
        where = (f"model={model} can be cut at {len(points)} point(s): after {', '.join(points)}" if points else
                 f"model={model} declares no cut point for this config (Model.cut_points)")
        if s.stages - 1 > len(points):
            raise ConfigError("strategy.stages", s.stages, f"at most {len(points) + 1}",
                              f"{where}; S stages need S-1 cuts (a deeper model has more)")
        if s.cuts:
            cuts = list(s.cuts)
            unknown = [c for c in cuts if c not in points]
            if unknown or len(cuts) != s.stages - 1 or cuts != sorted(cuts, key=points.index):
                raise ConfigError("strategy.cuts", cuts, f"{s.stages - 1} of {points} in model order, or []",
                                  where)

    # ------------------------------------------------------------------------- process lifecycle
    def _data_parallel(self, cfg) -> Strategy | None:
        """The data-parallel strategy whose processes this pipeline runs in (multi_worker launches its
        local workers and joins the cluster exactly as it does alone)."""
        if cfg.strategy.data_parallel != "multi_worker":
            return None
        if self._inner is None:
            self._inner = self._data_parallel_class(cfg)()
        return self._inner

    @classmethod
    def _data_parallel_class(cls, cfg) -> type[Strategy] | None:
        return registry.get("strategy", "multi_worker") if cfg.strategy.data_parallel == "multi_worker" else None

    @classmethod
    def process_rank(cls, cfg, environ) -> int | None:
        inner = cls._data_parallel_class(cfg)  # multi_worker's workers are ranks of the run dir's lock
        return inner.process_rank(cfg, environ) if inner else None

    @classmethod
    def local_processes(cls, cfg, environ) -> int:
        inner = cls._data_parallel_class(cfg)
        return inner.local_processes(cfg, environ) if inner else 1

    @classmethod
    def pins_processes(cls, cfg) -> bool:
        inner = cls._data_parallel_class(cfg)
        return inner.pins_processes(cfg) if inner else False

    @classmethod
    def local_rank(cls, cfg, environ) -> int | None:
        inner = cls._data_parallel_class(cfg)
        return inner.local_rank(cfg, environ) if inner else None

    def launches(self, cfg) -> bool:
        inner = self._data_parallel(cfg)
        return inner.launches(cfg) if inner else False

    def launch(self, cfg, run_dir: str) -> int:
        return self._data_parallel(cfg).launch(cfg, run_dir)

    def is_writer(self, cfg) -> bool:
        inner = self._data_parallel(cfg)
        return inner.is_writer(cfg) if inner else True

    def join(self, cfg) -> None:
        inner = self._data_parallel(cfg)
        if inner:
            inner.join(cfg)

    def create(self, cfg) -> Distribution:
        import tensorflow as tf

        s = cfg.strategy
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if cfg.hardware.name == "gpu" else "CPU")]
        if s.data_parallel == "multi_worker":
            inner = self._data_parallel(cfg).create(cfg)
            replica_devices = list(inner.strategy.extended.worker_devices)
        elif s.data_parallel == "mirrored":
            replica_devices = devices[::s.stages][:local_replicas(cfg)]
            cross = None if cfg.hardware.name == "gpu" else tf.distribute.ReductionToOneDevice()
            inner = TFDistribution("mirrored", tf.distribute.MirroredStrategy(replica_devices, cross_device_ops=cross))
        else:
            replica_devices = devices[:1]
            inner = TFDistribution("default", tf.distribute.get_strategy())
        needed = s.stages * len(replica_devices)
        if len(devices) < needed:
            raise ScaleflowError(f"strategy=pipeline: {s.stages} stages x {len(replica_devices)} replica(s) need "
                                 f"{needed} devices, TensorFlow sees {len(devices)} ({', '.join(devices)})")
        if s.data_parallel == "multi_worker" and s.cluster != "local":  # its size is known now
            check_micro_batches(cfg.data.batch_size // inner.num_replicas, s.micro_batches,
                                f"data.batch_size={cfg.data.batch_size} / {inner.num_replicas} replica(s)")
        if len(devices) > needed:
            log.warning("strategy=pipeline uses %d of the %d devices (%d stage(s) x %d replica(s)): the others idle",
                        needed, len(devices), s.stages, len(replica_devices))
        layout = [[stage_device(d, i) for i in range(s.stages)] for d in replica_devices]
        cuts = chosen_cuts(cfg)
        bubble = (s.stages - 1) / (s.micro_batches + s.stages - 1)
        log.info("strategy=pipeline: %d stages cut after %s, %d micro-batches per replica and step (bubble %.0f%%); "
                 "stages on %s", s.stages, ", ".join(cuts), s.micro_batches, 100 * bubble,
                 " | ".join(", ".join(d.split("device:")[-1] for d in replica) for replica in layout))
        return PipelineDistribution(inner, layout=layout, cuts=cuts, micro_batches=s.micro_batches,
                                    recompute=s.recompute,
                                    data_parallel=s.data_parallel)


# ------------------------------------------------------------------------- what the loop sees
class PipelineDistribution(Distribution):
    """The data-parallel distribution it runs in (default, mirrored, multi-worker), plus the stages.

    Args:
        inner: the data-parallel `Distribution` (its scope, input, callbacks and processes are used).
        layout: per local replica, the device of each stage.
        cuts: the layer names after which the model is cut.
        micro_batches: micro-batches per replica and step.
        data_parallel: what `inner` is (for run.json).
    """

    name = "pipeline"
    jit_compile = False  # XLA refuses variables placed on another device ("located in device CPU:1")

    def __init__(self, inner: Distribution, layout: list[list[str]], cuts: list[str], micro_batches: int,
                 data_parallel: str = "none", recompute: bool = False):
        self.inner, self.layout, self.cuts, self.recompute = inner, layout, cuts, recompute
        self.micro_batches, self.data_parallel = micro_batches, data_parallel
        self.num_workers, self.worker_index = inner.num_workers, inner.worker_index
        self.num_replicas, self.num_pipelines = inner.num_replicas, inner.num_pipelines
        self.max_steps_per_execution = inner.max_steps_per_execution
        self.strategy = getattr(inner, "strategy", None)

    def scope(self):
        return self.inner.scope()

    def active(self):
        return self.inner.active()

    def distribute(self, fn):
        return self.inner.distribute(fn)

    def wrap_optimizer(self, optimizer):
        return self.inner.wrap_optimizer(optimizer)

    def callbacks(self) -> list:
        return self.inner.callbacks()

    def prepare_model(self, model):
        """The model cut into stages and placed (see `pipelined`)."""
        return pipelined(model, self.cuts, self.layout, self.micro_batches, self.recompute)

    def describe(self) -> dict:
        return {**super().describe(), "stages": len(self.layout[0]), "micro_batches": self.micro_batches,
                "cut_points": list(self.cuts), "stage_devices": [list(r) for r in self.layout],
                "data_parallel": self.data_parallel, "recompute": self.recompute}


# ------------------------------------------------------------------------------ the Keras parts
def pipelined(model, cuts: list[str], layout: list[list[str]], micro_batches: int, recompute: bool = False):
    """`model` (a Functional Keras model, built under the strategy's scope) as a pipelined model:
    the same layers and weights, stage s's variables and optimizer slots on `layout[0][s]` (under a
    tf.distribute strategy they stay mirrored on each replica's first device), and a `train_step`
    that runs the GPipe schedule. Its `call` is the plain model, so the export has no device in it.

    Args:
        model: the Functional model from the task (`task.build_model`).
        cuts: names of the layers after which it is cut (S-1 of them).
        layout: per local replica, the device of each of the S stages.
        micro_batches: micro-batches per replica and step.
        recompute: recompute stages 0..S-2 in their backward pass (tf.custom_gradient) instead of
            keeping their activations.
    """
    import tensorflow as tf

    stages = split(model, cuts)
    if recompute:
        stateful = [layer.name for stage in stages[:-1] for layer in stage.layers
                    if type(layer).__name__ in ("BatchNormalization", "Dropout")]
        if stateful:
            raise ScaleflowError(f"strategy.recompute=true: stages before the last hold {', '.join(stateful)}; "
                                 "recomputing them would update BatchNormalization's statistics twice or draw new "
                                 "dropout masks. Use strategy.recompute=false")
    if not tf.distribute.has_strategy():  # a tf.distribute strategy places (mirrors) its variables itself
        place_variables(stages, layout[0])
    return _pipelined_class()(model, stages, layout, micro_batches, recompute)


def split(model, cuts: list[str]) -> list:
    """The stages: Functional models from one cut's output to the next (sharing the layers)."""
    import keras

    boundaries = [model.inputs[0] if len(model.inputs) == 1 else model.inputs]
    for cut in cuts:
        try:
            boundaries.append(model.get_layer(cut).output)
        except ValueError:
            raise ScaleflowError(f"strategy=pipeline: model {model.name} has no layer {cut!r} (a cut point its "
                                 "plugin declares in cut_points())") from None
    boundaries.append(model.outputs[0])
    stages = []
    for i, (start, end) in enumerate(zip(boundaries, boundaries[1:])):
        try:
            stages.append(keras.Model(start, end, name=f"stage_{i}"))
        except Exception as e:  # a cut that another tensor crosses (a skip connection) leaves a gap
            raise ScaleflowError(f"strategy=pipeline: cannot cut model {model.name} after {cuts[i - 1] if i else 'its input'}"
                                 f" and {cuts[i] if i < len(cuts) else 'its output'}: {e}. Only one tensor may cross "
                                 "a cut point (see Model.cut_points)") from None
    owned = [id(layer) for st in stages for layer in st.layers if layer.weights]
    if len(owned) != len(set(owned)):
        raise ScaleflowError(f"strategy=pipeline: a layer of model {model.name} with weights is in two stages")
    return stages


def place_variables(stages: list, devices: list[str]) -> None:
    """Re-create each stage's variables on its device, with their current values (Keras keeps the
    same Variable objects, so layers, checkpoints and the optimizer see the placed ones)."""
    import tensorflow as tf

    for stage, device in zip(stages, devices):
        with tf.device(device):
            for variable in stage.variables:
                if device_index(variable.value.device) != device_index(device):
                    variable._initialize(tf.identity(variable.value))  # Keras' own (re)initialiser


def device_index(device: str) -> str:
    return device.split("device:")[-1].upper() if device else ""


def place_optimizer_slots(optimizer, variables) -> None:
    """Build the optimizer with each slot created under its variable's device (Keras' TensorFlow
    optimizer colocates them only under a tf.distribute strategy; otherwise they land on CPU:0)."""
    import tensorflow as tf

    target = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer wraps the real one
    original = target.add_variable_from_reference

    def placed(reference_variable, *args, **kwargs):
        with tf.device(reference_variable.value.device):
            return original(reference_variable, *args, **kwargs)

    target.add_variable_from_reference = placed  # on this instance only, for this build only
    try:
        optimizer.build(variables)
    finally:
        del target.add_variable_from_reference


_CLASS: list = []


def _pipelined_class():
    """`PipelinedModel`, defined on first use so importing this module never imports Keras."""
    if _CLASS:
        return _CLASS[0]
    import keras
    import tensorflow as tf
    from keras.src.losses import loss as loss_module  # unscale_loss_for_distribution: as Keras' train_step

    class PipelinedModel(keras.Model):
        """A Functional model over the same graph whose training step is a GPipe pipeline (evaluate
        and predict also run stage by stage; `call`, which the export traces, is the plain model)."""

        def __init__(self, model, stages, layout, micro_batches, recompute=False):
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # as the task built it
            super().__init__(inputs, model.outputs[0], name=model.name)
            # A plain holder, not tracked by Keras: the stages share this model's layers, and the
            # checkpoint must hold every weight once, under this model.
            self._pipeline = _Stages(stages, layout, micro_batches, recompute)

        def compile(self, *args, **kwargs):
            kwargs["jit_compile"] = False
            super().compile(*args, **kwargs)
            if tf.distribute.has_strategy():  # mirrored: the strategy places (mirrors) the slots
                self.optimizer.build(self.trainable_variables)
            else:
                place_optimizer_slots(self.optimizer, self.trainable_variables)

        def _devices(self) -> list[str]:
            """This replica's stage devices (MirroredStrategy traces the step once per replica)."""
            context = tf.distribute.get_replica_context()
            replica = tf.get_static_value(context.replica_id_in_sync_group) if context is not None else 0
            layout = self._pipeline.layout
            return layout[int(replica or 0) % len(layout)]

        def _forward(self, x):
            """Inference through the stages, each on its device (evaluate and predict)."""
            for stage, device in zip(self._pipeline.stages, self._devices()):
                with tf.device(device):
                    x = stage(x, training=False)
            return x

        def test_step(self, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            y_pred = self._forward(x)
            with tf.device(self._devices()[-1]):
                loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
                self._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                                sample_weight=tf.shape(y_pred)[0])
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

        def predict_step(self, data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            return self._forward(x)

        def train_step(self, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            if self._pipeline.recompute:
                return self._recomputing_train_step(x, y, sample_weight)
            stages, k = self._pipeline.stages, self._pipeline.micro_batches
            devices = self._devices()
            trainable = self.trainable_variables
            index = {id(v): i for i, v in enumerate(trainable)}
            own = [[index[id(v)] for v in stage.trainable_variables] for stage in stages]

            def parts(t):
                return [None] * k if t is None else tf.split(t, k)

            xs, ys, ws = parts(x), parts(y), parts(sample_weight)
            totals: list = [None] * len(trainable)
            predictions = []
            for m in range(k):  # GPipe: every micro-batch forward and back; one update at the end
                activation, tapes, inputs, outputs = xs[m], [], [], []
                for s, (stage, device) in enumerate(zip(stages, devices)):
                    with tf.device(device), tf.GradientTape() as tape:
                        tape.watch(activation)
                        output = stage(activation, training=True)
                        if s == len(stages) - 1:
                            # The loss inside the last stage's tape: Keras computes a softmax's loss
                            # from its logits, which only this tape saw.
                            loss = self._compute_loss(x=xs[m], y=ys[m], y_pred=output, sample_weight=ws[m],
                                                      training=True)
                            self._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                                            sample_weight=tf.shape(output)[0])
                            target = self.optimizer.scale_loss(loss) / k
                    tapes.append(tape)
                    inputs.append(activation)
                    outputs.append(target if s == len(stages) - 1 else output)
                    activation = output
                predictions.append(activation)
                upstream = None
                for s in reversed(range(len(stages))):
                    with tf.device(devices[s]):
                        # The last tape also reaches regularisation losses of every stage's weights.
                        wanted = list(range(len(trainable))) if s == len(stages) - 1 else own[s]
                        grads = tapes[s].gradient(outputs[s], [inputs[s]] + [trainable[i].value for i in wanted],
                                                  output_gradients=upstream,
                                                  unconnected_gradients=tf.UnconnectedGradients.NONE)
                        upstream = grads[0]
                        _accumulate(totals, trainable, zip(wanted, grads[1:]))
            return self._apply(totals, predictions, devices[-1], x, y, sample_weight)

        def _recomputing_train_step(self, x, y, sample_weight):
            """GPipe with re-materialisation: stages 0..S-2 run in a tf.custom_gradient that keeps
            only their input and recomputes them under their device for the backward pass; the last
            stage and the loss are taped as usual. One tape per micro-batch."""
            stages, k = self._pipeline.stages, self._pipeline.micro_batches
            devices = self._devices()
            trainable = self.trainable_variables
            recomputed = [_recomputed(stage, device) for stage, device in zip(stages[:-1], devices[:-1])]

            def parts(t):
                return [None] * k if t is None else tf.split(t, k)

            xs, ys, ws = parts(x), parts(y), parts(sample_weight)
            totals: list = [None] * len(trainable)
            predictions = []
            for m in range(k):
                with tf.GradientTape() as tape:
                    activation = xs[m]
                    for stage_fn in recomputed:
                        activation = stage_fn(activation)
                    with tf.device(devices[-1]):
                        output = stages[-1](activation, training=True)
                        loss = self._compute_loss(x=xs[m], y=ys[m], y_pred=output, sample_weight=ws[m], training=True)
                        self._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                                        sample_weight=tf.shape(output)[0])
                        target = self.optimizer.scale_loss(loss) / k
                predictions.append(output)
                with tf.device(devices[-1]):  # each recomputed stage's backward runs under its own device
                    grads = tape.gradient(target, [v.value for v in trainable],
                                          unconnected_gradients=tf.UnconnectedGradients.NONE)
                _accumulate(totals, trainable, enumerate(grads))
            return self._apply(totals, predictions, devices[-1], x, y, sample_weight)

        def _apply(self, totals, predictions, last_device, x, y, sample_weight):
            """One optimizer step on the micro-batches' summed gradients; metrics on the whole batch."""
            trainable = self.trainable_variables
            gradients = [g if g is not None else tf.zeros_like(v) for g, v in zip(totals, trainable)]
            self.optimizer.apply_gradients(zip(gradients, trainable))
            with tf.device(last_device):
                y_pred = tf.concat(predictions, 0)
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _accumulate(totals, trainable, indexed_gradients):
        """Adds each (variable index, gradient) into `totals`, summed where the variable lives."""
        for i, g in indexed_gradients:
            if g is None:
                continue
            with tf.device(trainable[i].value.device):
                g = tf.identity(g)
                totals[i] = g if totals[i] is None else totals[i] + g

    def _recomputed(stage, device):
        """`stage` on `device` keeping only its input: its backward pass recomputes it there."""

        @tf.custom_gradient
        def forward(activation):
            with tf.device(device):
                output = stage(activation, training=True)

            def backward(upstream, variables=None):
                with tf.device(device):
                    with tf.GradientTape() as tape:
                        tape.watch(activation)
                        again = stage(activation, training=True)
                    grads = tape.gradient(again, [activation] + list(variables or []), output_gradients=upstream,
                                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return grads[0], grads[1:]

            return output, backward

        return forward

    _CLASS.append(PipelinedModel)
    return PipelinedModel


class _Stages:
    def __init__(self, stages, layout, micro_batches, recompute=False):
        self.stages, self.layout, self.micro_batches, self.recompute = stages, layout, micro_batches, recompute


__all__ = ["Pipeline", "PipelineConfig", "PipelineDistribution", "pipelined", "split", "stage_device"]
