"""`hydra/launcher=scaleflow`: every multirun job in a fresh process, `n_jobs` side by side."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class ScaleflowLauncher(Launcher):
    """Runs each job of a sweep as its own process (possibly the chief of a local cluster).

    Jobs never share a process, so TensorFlow's per-process device set-up, ports and open files of one
    job cannot leak into another; each job writes only below its own Hydra sweep subdir. A job that
    raises, dies or times out is returned as a failed `JobReturn`; the launcher never raises for one.

    Args:
        n_jobs: jobs running at the same time (>= 1).
        timeout_s: wall-clock limit of one job; then its process group is ended.
        kill_grace_s: seconds between SIGTERM and SIGKILL when a job is ended.
        stream_output: forward each job's output, prefixed with `[job N]`.
        env: extra environment variables for every job process.

    Example:
        python -m scaleflow -m hydra/launcher=scaleflow hydra.launcher.n_jobs=2 trainer.epochs=1,2
    """

    def __init__(self, n_jobs: int = 2, timeout_s: float = 86400.0, kill_grace_s: float = 10.0,
                 stream_output: bool = True, env: Optional[Dict[str, Any]] = None) -> None:
        if not isinstance(n_jobs, int) or n_jobs < 1:
            raise ValueError(f"hydra.launcher.n_jobs: expected an integer >= 1, received: {n_jobs!r}")
        if not timeout_s or float(timeout_s) <= 0:
            raise ValueError(f"hydra.launcher.timeout_s: expected a number > 0, received: {timeout_s!r}")
        self.n_jobs, self.timeout_s, self.kill_grace_s = n_jobs, float(timeout_s), float(kill_grace_s)
        self.stream_output = bool(stream_output)
        self.env = {str(k): str(v) for k, v in (OmegaConf.to_container(env) if isinstance(env, DictConfig)
                                                   else env or {}).items()}
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        from .job_process import JobProcess

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"ScaleflowLauncher(n_jobs={self.n_jobs}) is launching {len(job_overrides)} jobs, "
                 f"each in its own process")
        log.info(f"Launching jobs, sweep output dir : {sweep_dir}")

        # Configs are composed here, one after the other, so a composition error (unknown key, bad
        # option) is raised before any process starts, exactly as with Hydra's basic launcher.
        singleton_state = Singleton.get_state()
        jobs = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            jobs.append(JobProcess(idx, list(overrides), sweep_config, self.hydra_context, self.task_function,
                                   singleton_state, timeout_s=self.timeout_s, kill_grace_s=self.kill_grace_s,
                                   stream_output=self.stream_output, env=self.env))

        pool = ThreadPoolExecutor(max_workers=min(self.n_jobs, len(jobs)) or 1, thread_name_prefix="scaleflow-job")
        try:
            futures = [pool.submit(job.run) for job in jobs]
            returns = [future.result() for future in futures]  # in the jobs' order
        except BaseException:
            # Ctrl-C (or any launcher error): jobs run in their own sessions and would outlive the sweep.
            log.error("sweep interrupted: ending the running jobs")
            for job in jobs:
                job.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        failed = [job.idx for job, ret in zip(jobs, returns) if ret.status.name == "FAILED"]
        if failed:
            log.warning(f"{len(failed)} of {len(jobs)} jobs failed: " + ", ".join(f"#{i}" for i in failed))
        return returns
