"""Running one job as a cluster of worker processes (multi-worker training).

    ports.py      free 127.0.0.1 ports for a local cluster
    tf_config.py  TF_CONFIG: build it for a local worker, read it (strategy.cluster=env), or resolve
                  the cluster from Slurm (strategy.cluster=slurm)
    logs.py       stream a worker's output, prefixed by its rank, keeping its last lines
    local.py      LocalCluster: start N workers in their own process groups, watch them, end the job
                  cleanly (startup watchdog, first failure ends all, nothing left behind)
    heartbeat.py  per-worker liveness/progress files: which worker of a stalled job stopped first
    join.py       the worker side: wait for every peer to join, with a watchdog that ends a worker
                  whose peers never come (a blocked TensorFlow worker ignores SIGTERM)

Nothing here imports TensorFlow at import time: the launching process never needs it.
"""

from scaleflow.cluster.local import LocalCluster, WorkerFailed
from scaleflow.cluster.ports import free_ports

__all__ = ["LocalCluster", "WorkerFailed", "free_ports"]
