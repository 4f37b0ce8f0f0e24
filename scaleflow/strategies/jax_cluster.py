"""Where the processes of a multi-host JAX run come from: the arguments of
`keras.distribution.initialize(job_addresses, num_processes, process_id)`, from the environment.

    strategy.cluster=local  one process on this machine: no initialize
    strategy.cluster=env    Keras' own variables (KERAS_DISTRIBUTION_JOB_ADDRESSES,
                            KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID), else the
                            TF_CONFIG a TensorFlow cluster already has (chief first, then workers)
    strategy.cluster=slurm  one Slurm task per host (srun): SLURM_PROCID, SLURM_NTASKS, and the first
                            host of SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST) as the coordinator, on
                            `strategy.coordinator_port`

Pure Python: the arguments are computed (and their errors found) before any process starts.

Example:
    initialize_arguments("slurm", {"SLURM_PROCID": "1", "SLURM_NTASKS": "2",
                                   "SLURM_JOB_NODELIST": "node[07-08]"}, port=12355)
    # {"job_addresses": "node07:12355", "num_processes": 2, "process_id": 1}
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from scaleflow.errors import ConfigError

KERAS_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


def initialize_arguments(cluster: str, environ: Mapping[str, str], port: int = 12355) -> dict | None:
    """The keyword arguments of `keras.distribution.initialize` for `strategy.cluster=cluster`, or
    None for one local process. ConfigError (exit 2) when the environment does not describe a cluster."""
    if cluster == "local":
        return None
    if cluster == "env":
        return _from_env(environ)
    if cluster == "slurm":
        return _from_slurm(environ, port)
    raise ConfigError("strategy.cluster", cluster, "one of env, local, slurm")


def _int(environ: Mapping[str, str], name: str, cluster: str) -> int:
    value = environ.get(name, "")
    if not value.strip().isdigit():
        raise ConfigError("strategy.cluster", cluster, f"an environment with {name} set to an integer",
                          f"{name}={value!r}")
    return int(value)


def _checked(addresses: str, num_processes: int, process_id: int, cluster: str) -> dict:
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError("strategy.cluster", cluster, "a process id in [0, number of processes)",
                          f"process {process_id} of {num_processes}")
    return {"job_addresses": addresses, "num_processes": num_processes, "process_id": process_id}


def _from_env(environ: Mapping[str, str]) -> dict:
    if any(environ.get(name) for name in KERAS_ENV):
        missing = [name for name in KERAS_ENV if not environ.get(name)]
        if missing:
            raise ConfigError("strategy.cluster", "env", "all of " + ", ".join(KERAS_ENV) + " set",
                              "missing: " + ", ".join(missing))
        return _checked(environ[KERAS_ENV[0]], _int(environ, KERAS_ENV[1], "env"), _int(environ, KERAS_ENV[2], "env"),
                        "env")
    if environ.get("TF_CONFIG"):
        try:
            tf_config = json.loads(environ["TF_CONFIG"])
            cluster = tf_config["cluster"]
            members = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
            task = tf_config["task"]
            rank = int(task.get("index", 0)) + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError("strategy.cluster", "env", "a TF_CONFIG with cluster.chief/worker and task.type/index",
                              f"TF_CONFIG is malformed ({type(e).__name__}: {e})") from None
        return _checked(",".join(members), len(members), rank, "env")
    raise ConfigError("strategy.cluster", "env", "an environment describing the cluster: "
                      + ", ".join(KERAS_ENV) + ", or TF_CONFIG",
                      "none is set; strategy.cluster=local runs one process here")


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "node[07-08,10],gpu1" -> "node07"."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not head:
        return nodelist
    prefix, ranges = head.group(1), head.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _from_slurm(environ: Mapping[str, str], port: int) -> dict:
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or ""
    if not nodelist:
        raise ConfigError("strategy.cluster", "slurm", "a Slurm task's environment (run under srun)",
                          "SLURM_JOB_NODELIST is not set")
    return _checked(f"{first_host(nodelist)}:{port}", _int(environ, "SLURM_NTASKS", "slurm"),
                    _int(environ, "SLURM_PROCID", "slurm"), "slurm")
