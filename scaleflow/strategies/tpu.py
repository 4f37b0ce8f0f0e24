"""TPUStrategy: synchronous data parallelism over the cores of a TPU slice."""

from __future__ import annotations

import logging

from scaleflow.strategies.base import CLAIM_HARDWARE, Claim, Distribution, Strategy, TFDistribution, Topology

log = logging.getLogger("scaleflow")


class TPUDistribution(TFDistribution):
    """A TPUStrategy, driven by this one process: one input pipeline per TPU host, each reading only
    its shard of the records as `data.shard` assigns them (`ctx.input_pipeline_id` = the host), in
    full batches only (static shapes: the shard plan evens every shard to whole batches)."""

    def __init__(self, strategy, num_hosts: int):
        super().__init__("tpu", strategy)
        self.num_pipelines = num_hosts


class TPU(Strategy):
    """Train on a TPU: connects through TPUClusterResolver (`hardware.tpu`), initialises the TPU
    system and trains under TPUStrategy in bfloat16, with static batch shapes and
    `steps_per_execution` tuned for TPUs (auto: 128). Selecting `strategy=tpu` also selects
    `hardware=tpu` unless another hardware target is named. With no TPU, the run stops with a message
    saying where it looked; `strategy.fallback=true` runs on the devices present instead, with a warning.

    Example: `python -m scaleflow strategy=tpu data.shard=hash hardware.tpu=grpc://10.0.0.2:8470`
    """

    name = "tpu"
    # Choices this strategy implies unless the user made them: applied once per command before
    # composing, so they show in `--cfg job` and run.json (see scaleflow.config.implied).
    implies = {"hardware": "tpu", "trainer.mixed_precision": "bf16"}

    @classmethod
    def topology(cls, cfg, figures) -> Topology:
        # One process drives every TPU host; each host runs one input pipeline.
        return Topology(hosts=figures.hosts, processes=1, replicas=figures.devices, pipelines=figures.hosts)

    @classmethod
    def scaled(cls, cfg, figures, base: Topology, replicas: int) -> Topology:
        scaled = super().scaled(cfg, figures, base, replicas)
        return Topology(scaled.hosts, 1, replicas, scaled.hosts)

    @classmethod
    def suits(cls, cfg, figures) -> bool:
        return figures.required_strategy == cls.name

    @classmethod
    def claim(cls, cfg, environment) -> Claim | None:
        return Claim(CLAIM_HARDWARE, "hardware=tpu") if cfg.hardware.name == "tpu" else None

    @classmethod
    def batch_multiple(cls, cfg) -> tuple[int, str] | None:
        if cfg.hardware.name != "tpu" or cfg.strategy.get("fallback", False):
            return None
        from scaleflow.hardware.tpu import parse_topology

        replicas = parse_topology(cfg.hardware.topology).replicas
        return replicas, f"the {replicas} replicas of hardware.topology={cfg.hardware.topology}"

    @classmethod
    def validate(cls, cfg) -> None:
        from scaleflow.errors import ConfigError

        if cfg.hardware.name != "tpu" and not cfg.strategy.get("fallback", False):
            raise ConfigError("hardware", cfg.hardware.name, "tpu with strategy=tpu",
                              "Drop the hardware= override, or add strategy.fallback=true to run on it")
        super().validate(cfg)
        if cfg.trainer.mixed_precision == "fp16":
            raise ConfigError("trainer.mixed_precision", "fp16", "off or bf16 on a TPU", "TPUs compute in bfloat16")

    def create(self, cfg) -> Distribution:
        import tensorflow as tf

        from scaleflow.hardware.tpu import connect

        resolver = connect(cfg) if cfg.hardware.name == "tpu" else None
        if resolver is None:
            from scaleflow.strategies.auto import fallback_strategy

            name, reason = fallback_strategy(cfg)
            log.warning("strategy=tpu with strategy.fallback=true and no TPU: training with strategy=%s (%s) "
                        "on the devices present", name, reason)
            from scaleflow import registry

            return registry.get("strategy", name)().create(cfg)
        strategy = tf.distribute.TPUStrategy(resolver)
        hosts = max(1, len(resolver.cluster_spec().as_dict().get("worker", [])))
        log.info("TPU %s (%s): %d replicas, %d host(s), one input pipeline per host", cfg.hardware.tpu,
                 cfg.hardware.topology, strategy.num_replicas_in_sync, hosts)
        return TPUDistribution(strategy, hosts)
