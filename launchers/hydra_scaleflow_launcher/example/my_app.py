"""Each job runs in its own process:  python my_app.py -m task=1,2,3,4"""

import logging
import os
import time

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@hydra.main(version_base=None, config_path=".", config_name="config")
def my_app(cfg: DictConfig) -> int:
    log.info(f"task={cfg.task} in process {os.getpid()}")
    time.sleep(1)
    return cfg.task


if __name__ == "__main__":
    my_app()
