"""mode=train: launch the strategy's processes if it needs several, else train in this process."""

from __future__ import annotations

import logging

from scaleflow import registry
from scaleflow.errors import ScaleflowError

log = logging.getLogger("scaleflow")


def run(cfg, run_dir: str):
    from scaleflow.tasks import check_labels

    check_labels(cfg)  # bad labels: exit 2 before TensorFlow or any worker starts
    strategy = registry.get("strategy", cfg.strategy.name)()
    if strategy.launches(cfg):  # the job runs in processes this one starts
        from scaleflow.training.setup import align_backups

        if cfg.trainer.resume:
            align_backups(run_dir)  # the one resume policy of every multi-process strategy
        status = strategy.launch(cfg, run_dir)
        if status != 0:
            raise ScaleflowError(f"strategy={cfg.strategy.name}: the job failed (exit status {status}); "
                                 f"see the log above and {run_dir}/run.json")
        return None
    from scaleflow.training.train import run as train

    return train(cfg, run_dir, strategy)
