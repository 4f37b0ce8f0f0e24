"""One multirun job in its own process: hand it the job over a file, wait with a timeout, read back
its `JobReturn`. A process that dies or hangs becomes a failed `JobReturn`, never an exception."""

from __future__ import annotations

import collections
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

from hydra.core.utils import JobReturn, JobStatus

try:
    import cloudpickle
except ImportError:  # joblib vendors it; task functions may be closures or live in __main__
    from joblib.externals import cloudpickle

log = logging.getLogger(__name__)
TAIL_LINES = 20


class JobProcessError(RuntimeError):
    """A job's process died, timed out, or its result could not be read back."""


class JobProcess:
    """A job to run in a new process (its own session, so ending it ends the workers it started)."""

    def __init__(self, idx: int, overrides: List[str], sweep_config: Any, hydra_context: Any, task_function: Any,
                 singleton_state: Dict[Any, Any], timeout_s: float, kill_grace_s: float,
                 stream_output: bool, env: Dict[str, str]) -> None:
        self.idx, self.overrides, self.sweep_config = idx, overrides, sweep_config
        self.hydra_context, self.task_function, self.singleton_state = hydra_context, task_function, singleton_state
        self.timeout_s, self.kill_grace_s, self.stream_output, self.env = timeout_s, kill_grace_s, stream_output, env
        self.tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
        self.proc: subprocess.Popen | None = None
        self.cancelled = threading.Event()

    def run(self) -> JobReturn:
        # A private temp dir per job: nothing the launcher writes is shared between jobs.
        workdir = tempfile.mkdtemp(prefix=f"hydra-scaleflow-job{self.idx}-")
        try:
            return self._run(os.path.join(workdir, "job.pkl"), os.path.join(workdir, "return.pkl"))
        except Exception as e:  # noqa: BLE001 - a launcher failure for one job fails that job only
            return self._failed(JobProcessError(f"job #{self.idx} could not be run: {type(e).__name__}: {e}"))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, job_file: str, return_file: str) -> JobReturn:
        with open(job_file, "wb") as f:
            pickle.dump(list(sys.path), f)  # first, so the child can import what the task needs
            cloudpickle.dump({"sweep_config": self.sweep_config, "hydra_context": self.hydra_context,
                              "task_function": self.task_function, "singleton_state": self.singleton_state}, f)
        env = {**os.environ, **self.env, "HYDRA_SCALEFLOW_LAUNCHER_JOB": str(self.idx)}
        cmd = [sys.executable, "-m", "hydra_plugins.hydra_scaleflow_launcher.job_main", job_file, return_file]
        started = time.monotonic()
        if self.cancelled.is_set():
            return self._failed(JobProcessError(f"job #{self.idx} was not started: the sweep was interrupted"))
        proc = self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        if self.cancelled.is_set():  # cancelled while starting
            self._end(proc)
        pump = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        pump.start()
        try:
            code = proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self._end(proc)
            pump.join(timeout=5)
            return self._failed(JobProcessError(
                f"job #{self.idx} ({' '.join(self.overrides)}) timed out after {self.timeout_s:g} s "
                f"(hydra.launcher.timeout_s) and was ended. Last output:\n" + "\n".join(self.tail)))
        finally:
            # Workers a job started and left behind (it should not) are ended with it.
            self._end_group(proc.pid)
        pump.join(timeout=5)
        if os.path.exists(return_file):
            try:
                with open(return_file, "rb") as f:
                    ret = pickle.load(f)
                if code != 0:
                    log.warning(f"job #{self.idx} exited with status {code} after writing its result")
                return ret
            except Exception as e:  # noqa: BLE001
                return self._failed(JobProcessError(f"job #{self.idx}: its result could not be read: {e}"))
        return self._failed(JobProcessError(
            f"job #{self.idx} ({' '.join(self.overrides)}) process exited with status {code} after "
            f"{time.monotonic() - started:.1f} s without a result. Last output:\n" + "\n".join(self.tail)))

    def cancel(self) -> None:
        """End the job now (the sweep was interrupted): its own session gets no Ctrl-C from the terminal."""
        self.cancelled.set()
        if self.proc is not None and self.proc.poll() is None:
            self._end(self.proc)

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if self.stream_output:
                sys.stdout.write(f"[job {self.idx}] {line}\n")
                sys.stdout.flush()

    def _end(self, proc: subprocess.Popen) -> None:
        """SIGTERM the job's process group, then SIGKILL: a worker blocked in a collective ignores SIGTERM."""
        self._signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error(f"job #{self.idx}: process {proc.pid} survived SIGKILL")

    def _end_group(self, pgid: int) -> None:
        self._signal_group(pgid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _failed(self, error: BaseException) -> JobReturn:
        hydra_cfg = self.sweep_config.get("hydra") if self.sweep_config is not None else None
        task_cfg = self.sweep_config.copy()
        if "hydra" in task_cfg:
            from omegaconf import open_dict

            with open_dict(task_cfg):
                del task_cfg["hydra"]
        ret = JobReturn(overrides=self.overrides, cfg=task_cfg, hydra_cfg=hydra_cfg, working_dir=os.getcwd(),
                        task_name=str(self.sweep_config.hydra.job.name), status=JobStatus.FAILED)
        ret.return_value = error  # stored as the job's exception: raised when a sweeper reads it
        ret.status = JobStatus.FAILED
        log.error(str(error))
        return ret
