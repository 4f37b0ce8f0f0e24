"""The structured config schema: types and defaults for every key scaleflow reads.

Hydra checks types and unknown keys at composition; `scaleflow/validation.py` checks what types cannot say
(choices, ranges, paths, cross-field rules). Field metadata carries those constraints so the schema
stays the single place that says what a key accepts:

    choices=[...]   allowed values           min / max      inclusive numeric range
    path="file"     must be an existing file  path="exists"  file, directory or glob that matches
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


def choice(default: Any, *choices: Any, **meta: Any) -> Any:
    return field(default=default, metadata={"choices": list(choices), **meta})


def bounded(default: Any, min: Any = None, max: Any = None, **meta: Any) -> Any:  # noqa: A002
    return field(default=default, metadata={"min": min, "max": max, **meta})


def items(default: list, **meta: Any) -> Any:
    return field(default_factory=lambda: list(default), metadata=meta)


# ----------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = MISSING
    activation: str = choice("relu", "relu", "gelu", "swish", "tanh", "sigmoid", "elu", "selu")
    dropout: float = bounded(0.0, min=0.0, max=0.95)


# ------------------------------------------------------------------------------------------ data
SHARD_POLICIES = ("sequential", "random", "hash")


@dataclass
class EncryptionConfig:
    """The AES-256-GCM key of encrypted inputs (and of trainer.encrypt_checkpoints): the name of an
    environment variable or a key file holding it, never the key itself (security/crypto.py)."""

    key_env: Optional[str] = None
    key_file: Optional[str] = None


@dataclass
class DataConfig:
    name: str = MISSING
    path: Optional[str] = None
    batch_size: int = bounded(64, min=1, max=1 << 20)  # global batch, over all replicas
    validation_split: float = bounded(0.1, min=0.0, max=0.9)
    shuffle_buffer: int = bounded(10000, min=0)  # 0 disables shuffling
    cache: bool = True
    # data.cache holds a pipeline's records in memory only up to this many MB (estimated from the
    # input shape); a larger split is read from the files every epoch, so memory does not grow with
    # the data. null: no limit.
    cache_max_mb: Optional[int] = bounded(256, min=1)
    shard: str = choice("sequential", *SHARD_POLICIES)
    shard_key: Optional[str] = None
    shard_level: str = choice("auto", "auto", "file", "record")
    uneven: str = choice("repeat", "repeat", "drop")
    reshuffle_each_epoch: bool = False
    seed: int = 0
    # Masking as records are read (data/mask.py): column -> drop | hash | {method: bucket, edges: [...]}
    # | {method: noise, scale: s}. `hash` is keyed HMAC-SHA256: the key comes from an environment
    # variable or a file, never from the config itself.
    mask: Dict[str, Any] = field(default_factory=dict)
    mask_key_env: Optional[str] = None
    mask_key_file: Optional[str] = None
    # Labels (see scaleflow/tasks): class names in class-id order (else from the labels), and a guard
    # against a numeric target read as thousands of classes.
    class_names: Optional[List[str]] = None
    max_classes: int = bounded(1000, min=2)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    # Per-file indexes (data/index.py): record counts, offsets, label and key values, so describing
    # costs O(files) after the first time and record-level shards seek. `off` scans every run.
    index: str = choice("auto", "auto", "off")
    index_dir: Optional[str] = None  # null: next to the data (the user cache when read-only)
    index_check: str = choice("stat", "stat", "checksum")  # stale when size+mtime (or SHA-256) differ
    index_workers: int = bounded(0, min=0, max=1024)  # mode=index: files indexed at once (0: one per core)
    # Where the input pipeline runs (scaleflow/data/service.py): off (in this process) | local (a
    # tf.data service dispatcher and `service_workers` workers started for the run on 127.0.0.1) |
    # <host:port> (join that dispatcher, started with a fixed worker list). Checked by data/service_config.py.
    service: str = "off"
    service_workers: Optional[int] = bounded(None, min=1, max=64)  # local only; null: from the hardware
    service_timeout_s: float = bounded(60.0, min=1.0, max=3600.0)  # start-up / connection deadline


# -------------------------------------------------------------------------------------- strategy
@dataclass
class StrategyConfig:
    name: str = MISSING
    num_workers: int = bounded(1, min=1, max=1024)
    timeout_s: float = bounded(120.0, min=1.0)
    cluster: str = choice("local", "local", "env", "slurm")
    fallback: bool = False
    hosts: List[str] = items([])
    # Workers on this machine (multi_worker cluster=local, horovod without hosts) run in one private
    # network namespace, so their servers are reachable from no other host (see cluster/netns.py).
    isolate_network: bool = True


# -------------------------------------------------------------------------------------- hardware
@dataclass
class HardwareConfig:
    name: str = MISSING
    logical_devices: int = bounded(1, min=1, max=64)  # CPU replicas for Mirrored on one CPU
    num_gpus: int = bounded(-1, min=-1)  # -1: all visible
    memory_growth: bool = True
    tpu: Optional[str] = None
    topology: Optional[str] = None
    hosts: List[str] = items([])
    devices_per_host: int = bounded(1, min=1)
    # What the planner needs to predict a step time (per device / per link).
    peak_flops: float = bounded(5.0e10, min=0.0)
    memory_bytes: float = bounded(8.0e9, min=0.0)
    bandwidth_bytes_s: float = bounded(5.0e9, min=0.0)  # within a host
    latency_s: float = bounded(2.0e-5, min=0.0)
    inter_host_bandwidth_bytes_s: float = bounded(1.25e9, min=0.0)
    inter_host_latency_s: float = bounded(1.0e-4, min=0.0)
    precision: str = choice("float32", "float32", "bfloat16", "float16")
    # Fixed cost of one training step beyond its FLOPs (dispatch, optimizer update, input), per replica
    # when replicas share one CPU; `mode=calibrate` measures it.
    step_overhead_s: float = bounded(5.0e-4, min=0.0)
    # Bytes/s an optimizer update streams variables, gradients and slots at: the update is memory-bound
    # (TF-backend Adam here: 1.4 ns per parameter, ~40 bytes at 2.8e10 B/s; 2 ms a step for 1.3M
    # parameters, which the planner left out). 0: not modelled.
    update_bytes_s: float = bounded(2.8e10, min=0.0)
    # TensorFlow's thread pools per training process (hardware/threads.py). null: chosen from the cores
    # and the job's processes on this host (cores // processes when several share it, else
    # TensorFlow's default); 0: TensorFlow's default (every core); N: N threads. run.json: tuning.threads.
    intra_op_threads: Optional[int] = bounded(None, min=0, max=4096)
    inter_op_threads: Optional[int] = bounded(None, min=0, max=4096)
    # Pin each of the job's processes on this host to its own block of cores (cores // processes, by its
    # place on the host), with every thread it has and will start. null: the strategy's choice
    # (Strategy.pins_processes: multi_worker pins, horovod does not; measured in hardware/threads.py).
    pin_processes: Optional[bool] = None


# --------------------------------------------------------------------------------------- trainer
@dataclass
class LRScheduleConfig:
    """`trainer.lr_schedule` (scaleflow/training/schedules.py): a decay after a linear warmup."""

    name: str = choice("constant", "constant", "cosine", "exponential", "step")
    warmup_epochs: float = bounded(0.0, min=0.0)  # linear warmup from ~0 to trainer.learning_rate
    decay_rate: float = bounded(0.5, min=0.0, max=1.0)  # exponential: factor per decay_epochs; step: per drop
    decay_epochs: float = bounded(1.0, min=0.001)  # exponential: epochs per decay_rate; step: epochs between drops
    min_lr: float = bounded(0.0, min=0.0)  # cosine: the final learning rate


@dataclass
class EarlyStoppingConfig:
    """`trainer.early_stopping` (scaleflow/training/controls.py); `monitor`/`mode` also judge keep_best."""

    enabled: bool = False
    monitor: str = "val_loss"  # a metric the run logs: loss, <metric>, val_loss, val_<metric>
    mode: str = choice("auto", "auto", "min", "max")  # auto: max for accuracy-like metrics, else min
    patience: int = bounded(3, min=1)  # epochs without improvement before stopping
    min_delta: float = bounded(0.0, min=0.0)  # a smaller change is not an improvement


@dataclass
class TrainerConfig:
    epochs: int = bounded(5, min=1, max=1_000_000)
    steps_per_epoch: Optional[int] = bounded(None, min=1)  # None: one pass over this worker's shard
    optimizer: str = choice("adam", "adam", "sgd", "rmsprop", "adamw", "adagrad", "nadam")
    learning_rate: float = bounded(1e-3, min=0.0, max=10.0)
    momentum: float = bounded(0.0, min=0.0, max=1.0)
    weight_decay: float = bounded(0.0, min=0.0)
    seed: int = 0
    steps_per_execution: Any = "auto"  # "auto" or a positive integer
    mixed_precision: str = choice("off", "off", "bf16", "fp16")
    jit_compile: Any = "auto"  # "auto" | true | false
    resume: bool = True
    on_nan: str = choice("stop", "stop", "continue")  # a NaN/inf training loss fails the run, or not
    verbose: str = choice("line", "line", "progress", "quiet", "debug")  # debug: TensorFlow's C++ logs too
    callbacks: List[str] = items([])  # extra registered callbacks (scaleflow.callbacks), by name
    # Loss and metrics by Keras name; null: the task's defaults (checked against the task before TF).
    loss: Optional[str] = None
    metrics: Optional[List[str]] = None
    # Training controls (scaleflow/training/controls.py, schedules.py).
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    clip_norm: Optional[float] = bounded(None, min=0.0)  # clip gradients to this global norm
    clip_value: Optional[float] = bounded(None, min=0.0)  # clip each gradient element to [-v, v]
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    keep_best: bool = False  # export the best epoch by early_stopping.monitor (needs validation data), else the last
    encrypt_checkpoints: bool = False  # backup/ encrypted with data.encryption's key (AES-256-GCM)


# ---------------------------------------------------------------------------------------- export
@dataclass
class ExportConfig:
    format: str = MISSING  # the exporter: saved_model | tflite | none (or a plugin's)
    dir: str = "export"  # relative paths are inside the run dir
    name: str = "${model.name}"  # <dir>/<name>/<version>/, TensorFlow Serving's layout
    version: Any = "auto"  # "auto" (next integer, TF Serving style) or a positive integer
    verify: bool = True
    tolerance: float = bounded(1e-4, min=0.0)
    # What a finished run's verified export becomes in <dir>/<name>/labels.json (scaleflow/deploy):
    # if_better: `stable` when it beats the current stable on sweep.objective over this run's
    # validation records (same data fingerprint), else `canary`; always: `stable`; never: no label.
    promote: str = choice("if_better", "if_better", "always", "never")
    # Also write <version>.sealed (an AES-256-GCM encrypted tar of the version) + .sealed.sha256, for
    # transport; the key from seal_key_env/seal_key_file, else data.encryption's.
    seal: bool = False
    seal_key_env: Optional[str] = None
    seal_key_file: Optional[str] = None


QUANTIZATIONS = ("none", "dynamic", "float16", "int8")


@dataclass
class TFLiteExportConfig(ExportConfig):
    """`export=tflite`: post-training quantization for edge devices."""

    # none: float32; dynamic: int8 weights, float activations; float16: float16 weights;
    # int8: full-integer (weights, activations, int8 input/output) calibrated on the training shard.
    quantize: str = choice("none", *QUANTIZATIONS)
    calibration_samples: int = bounded(256, min=1, max=100_000)  # training records for int8 calibration
    # dynamic/int8: one scale per output channel of each weight (more accurate on layers whose channels
    # differ in range) instead of one per tensor (smaller: each channel's scale and zero point cost 12
    # bytes, which on a small model is a tenth of the file).
    per_channel: bool = False


# --------------------------------------------------------------------------------------- profile
@dataclass
class ProfileConfig:
    """profile=off | tensorboard | summary (see scaleflow/profiling/)."""

    name: str = MISSING
    # tensorboard: the steps [start, stop] (1-based, within the first epoch trained) traced one step per
    # call with a step marker, so TensorBoard's Overview has a step time; then full speed again.
    batches: List[int] = items([10, 20])
    # summary: time one call in every `sample_every` step by step (input wait vs step); the other calls
    # run at full speed, which keeps the cost a few percent.
    sample_every: int = bounded(64, min=1, max=1_000_000)
    # TensorFlow's profiler server for TensorBoard's "Capture profile" (any profile option); worker i
    # listens on port + i. null: no server. TensorFlow binds it on ALL interfaces (it takes no address).
    port: Optional[int] = bounded(None, min=1, max=65535)
    # strategy=horovod: Horovod's own timeline (HOROVOD_TIMELINE) in tensorboard/horovod_timeline.json
    timeline: bool = False


# ---------------------------------------------------------------------------------------- logger
@dataclass
class LoggerConfig:
    """logger=none | mlflow (see scaleflow/tracking/): the base of every logger's schema."""

    name: str = MISSING
    tracking_uri: Optional[str] = None  # None: a local store chosen by the logger
    experiment: str = "scaleflow"


# ------------------------------------------------------------------------------------------ plan
@dataclass
class PlanConfig:
    """Options of `mode=plan` (and the step-time prediction recorded in run.json)."""

    max_replicas: int = bounded(0, min=0, max=65536)  # scaling curve up to this; 0: the hardware's devices
    plot: bool = False  # also save the predicted scaling curve as plan_scaling.png
    profile: Optional[str] = None  # a hardware profile YAML written by mode=calibrate (overrides figures)


# ----------------------------------------------------------------------------------------- sweep
@dataclass
class SweepConfig:
    """What a sweeper optimises: the job's final metric `objective`, minimised or maximised."""

    objective: str = "val_loss"  # a key of run.json metrics.final, e.g. val_loss, val_accuracy, loss
    direction: str = choice("minimize", "minimize", "maximize")


# -------------------------------------------------------------------------------------- registry
@dataclass
class RegistryConfig:
    """Options of `mode=models` (the model registry over run.json and export files)."""

    root: List[str] = items(["outputs", "multirun"])  # directories searched for run.json
    compare: List[str] = items([])  # [a, b]: two run dirs or name:version, side by side
    format: str = choice("table", "table", "json")
    verify: bool = True  # re-hash export files against their checksums


# ---------------------------------------------------------------------------------- evaluate/predict
INFERENCE_SPLITS = ("all", "train", "validation")


@dataclass
class EvaluateConfig:
    """Options of `mode=evaluate` (the model comes from `run=` or `model_dir=`)."""

    split: str = choice("all", *INFERENCE_SPLITS)  # which records (train/validation: data.validation_split, data.seed)
    plot: bool = True  # also draw confusion_matrix.png (classification)


@dataclass
class PredictConfig:
    """Options of `mode=predict` (the model comes from `run=` or `model_dir=`)."""

    split: str = choice("all", *INFERENCE_SPLITS)
    format: str = choice("csv", "csv", "parquet")
    output: Optional[str] = None  # default: predictions.<format> in the run dir


@dataclass
class ExplainConfig:
    """Options of `mode=explain` (the model comes from `run=` or `model_dir=`)."""

    split: str = choice("validation", *INFERENCE_SPLITS)
    samples: int = bounded(512, min=1, max=100_000)  # records explained (a seeded sample of the split)
    steps: int = bounded(32, min=4, max=1024)  # integrated-gradients path steps
    baseline: str = choice("mean", "mean", "zero")  # training feature means (stored with the export) or 0
    permutation_repeats: int = bounded(3, min=1, max=100)
    top_k: int = bounded(10, min=1, max=1000)  # features shown per ranking and chart
    plot: bool = True
    seed: int = 0


# -------------------------------------------------------------------------------------- security
@dataclass
class SecurityConfig:
    """Data protection (see scaleflow/security/ and the README's "Security" section)."""

    # More config key names whose values are secrets (besides password, token, secret, key, ...):
    # redacted as *** in run.json, .hydra/*.yaml, logs and sweep summaries.
    secret_keys: List[str] = items([])
    # `_target_` values a config may instantiate (e.g. a callback of yours); nothing else runs.
    allow_targets: List[str] = items([])
    # The append-only, hash-chained audit log (JSONL); relative to the working directory, like
    # outputs/. null or "" turns auditing off.
    audit_log: Optional[str] = "outputs/audit.jsonl"


# ---------------------------------------------------------------------------------------- deploy
DEPLOY_TARGETS = ("kserve", "tfserving")


@dataclass
class DeployConfig:
    """`mode=deploy`: Kubernetes manifests for a model's export, and label rollback (no TensorFlow)."""

    target: str = choice("kserve", *DEPLOY_TARGETS)
    # The model: `run=<run dir>` (top-level key, as for evaluate/predict) deploys the export its
    # run.json names, or deploy.model_dir=<export.dir>/<export.name> (the model dir, all its versions).
    model_dir: Optional[str] = None
    rollback: bool = False  # move `stable` back to the previous stable version, then write manifests
    out: Optional[str] = None  # where manifests go (default: this mode's run dir)
    name: Optional[str] = None  # Kubernetes object name (default: the export name, DNS-1123-ised)
    namespace: str = "default"
    # kserve: where the cluster finds <name>/ (TF Serving layout + models.config), e.g. s3://b/models/mlp
    storage_uri: Optional[str] = None  # default pvc://<volume_claim>/<export name>
    # tfserving: the official image, the volume holding <name>/ and the autoscaler's bounds.
    image: str = "tensorflow/serving:2.21.0"
    volume_claim: str = "scaleflow-models"
    min_replicas: int = bounded(1, min=1, max=1000)
    max_replicas: int = bounded(4, min=1, max=1000)
    target_cpu_utilization: int = bounded(70, min=1, max=100)
    cpu: str = "500m"  # per replica request (the autoscaler's base)
    memory: str = "1Gi"


# ----------------------------------------------------------------------------------------- serve
@dataclass
class ServeConfig:
    """Options of `mode=serve`: a KServe model server speaking TensorFlow Serving's REST API."""

    model_dir: Optional[str] = None  # <export.dir>/<export.name>: the version dirs 1/, 2/, ... and labels.json
    run: Optional[str] = None  # a run dir: serve the model its run.json `export` block names
    name: Optional[str] = None  # the model name in URLs (/v1/models/<name>); default: model_dir's basename
    host: str = "127.0.0.1"  # loopback unless set: nothing listens beyond it unless configured
    port: int = bounded(8501, min=1, max=65535)  # TensorFlow Serving's REST port
    versions: List[int] = items([])  # served beside the latest (and the labelled) versions
    poll_s: float = bounded(2.0, min=0.05, max=3600.0)  # how often the model dir is re-read
    max_batch_size: int = bounded(64, min=1, max=65536)  # rows per model call; 1 turns batching off
    batch_timeout_ms: float = bounded(2.0, min=0.0, max=10000.0)  # how long a batch waits to fill
    workers: int = bounded(1, min=1, max=64)  # server processes behind one port
    threads: int = bounded(2, min=1, max=256)  # model calls (requests, or batches) in flight per process
    max_body_bytes: int = bounded(10 << 20, min=64)  # larger request bodies get 413
    warmup: bool = True  # replay assets.extra/tf_serving_warmup_requests before a version is served
    drift_window: int = bounded(1000, min=10)  # request rows per drift window (per version, per process)
    drift_threshold: float = bounded(0.2, min=0.0)  # PSI above it is logged once per window
    grace_s: float = bounded(30.0, min=0.0)  # SIGTERM: how long in-flight requests may take to finish
    # Bearer tokens (security/auth.py; stored hashed): predict and admin roles; unset: no auth.
    auth_token_file: Optional[str] = None


# ---------------------------------------------------------------------------------------- config
@dataclass
class Config:
    mode: str = "train"  # one of scaleflow.modes.MODES: train, plan, shards, plugins, ...
    run: Optional[str] = None  # evaluate/predict/deploy: a finished run dir (its run.json names model and data)
    model_dir: Optional[str] = None  # evaluate/predict: an export version dir <export.dir>/<name>/<version>
    path: Optional[str] = None  # what mode=verify checks / the log mode=audit checks
    task: str = "classification"  # a registered task (scaleflow.tasks): classification, binary, multilabel, regression
    # Group nodes are typed by their option's own schema (e.g. MLPConfig for model=mlp),
    # so the top level only says they must be present.
    model: Any = MISSING
    data: Any = MISSING
    strategy: Any = MISSING
    hardware: Any = MISSING
    trainer: Any = MISSING
    export: Any = MISSING
    profile: Any = MISSING
    logger: Any = MISSING
    plan: PlanConfig = field(default_factory=PlanConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
