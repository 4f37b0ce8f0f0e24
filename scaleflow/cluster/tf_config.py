"""TF_CONFIG: the cluster description MultiWorkerMirroredStrategy reads.

`local_tf_config` builds one for each worker of a local cluster; `read` parses the one a cluster
manager set (strategy.cluster=env); `cluster_resolver` gives TensorFlow's resolver for each
`strategy.cluster` choice (imports TensorFlow: call it only in a training worker).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from scaleflow.errors import ConfigError, ScaleflowError

ENV = "TF_CONFIG"


def local_tf_config(ports: list[int], index: int, host: str = "127.0.0.1") -> str:
    """TF_CONFIG (JSON) for worker `index` of a cluster of `len(ports)` workers on `host`."""
    return json.dumps({"cluster": {"worker": [f"{host}:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


@dataclass(frozen=True)
class ClusterInfo:
    """Who this process is in the cluster. Rank 0 is the chief (the `chief` task if there is one)."""

    num_workers: int
    rank: int
    addresses: tuple[str, ...]


def read(environ=None) -> ClusterInfo:
    """Parse TF_CONFIG from the environment; a clear error when it is missing or malformed."""
    text = (environ if environ is not None else os.environ).get(ENV)
    if not text:
        raise ConfigError("strategy.cluster", "env", "a TF_CONFIG environment variable describing the cluster",
                          'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                          '"task": {"type": "worker", "index": 0}}\'')
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError("TF_CONFIG", text, "JSON with 'cluster' {'worker': [...]} and 'task' {'type', 'index'}",
                          f"could not read it: {e}") from None
    if kind not in ("chief", "worker"):
        raise ConfigError("TF_CONFIG", text, "task type 'chief' or 'worker' for multi-worker training")
    members = chiefs + workers
    rank = index if kind == "chief" else len(chiefs) + index
    if not members or rank >= len(members):
        raise ConfigError("TF_CONFIG", text, f"a task index within the cluster ({len(members)} members)")
    return ClusterInfo(len(members), rank, tuple(members))


def cluster_resolver(cluster: str, hardware: str = "cpu"):
    """TensorFlow's cluster resolver for strategy.cluster = local | env (TF_CONFIG) | slurm."""
    import tensorflow as tf

    SlurmClusterResolver = tf.distribute.cluster_resolver.SlurmClusterResolver
    TFConfigClusterResolver = tf.distribute.cluster_resolver.TFConfigClusterResolver

    if cluster in ("local", "env"):
        read()  # a clear error before TensorFlow's own
        return TFConfigClusterResolver()
    if cluster == "slurm":
        if "SLURM_PROCID" not in os.environ:
            raise ScaleflowError("strategy.cluster=slurm: SLURM_PROCID is not set; run under `srun` "
                                 "(one task per worker) or use strategy.cluster=env with a TF_CONFIG")
        # TF's resolver lists one task per GPU slot (zip of tasks and GPU offsets): with 0 GPUs it finds no
        # task at all. On CPU give it nominal slots, and keep it from querying nvidia-smi or rewriting
        # CUDA_VISIBLE_DEVICES.
        kwargs = {"gpus_per_node": 1 << 16, "gpus_per_task": 1, "auto_set_gpu": False} if hardware == "cpu" else {}
        port = int(os.environ.get("SCALEFLOW_SLURM_PORT_BASE", "8888"))
        try:
            return SlurmClusterResolver(port_base=port, **kwargs)
        except RuntimeError as e:
            raise ScaleflowError(f"strategy.cluster=slurm: could not resolve the cluster from Slurm's "
                                 f"environment: {e}") from None
    raise ConfigError("strategy.cluster", cluster, "one of env, local, slurm")
