"""The `hydra/launcher=scaleflow` plugin (launchers/hydra_scaleflow_launcher) passes Hydra's own launcher
test suites, and keeps jobs apart: each in its own process, failures returned, never raised."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.test_utils.test_utils import TSweepRunner

pytest.importorskip("hydra_plugins.hydra_scaleflow_launcher",
                    reason="pip install -e launchers/hydra_scaleflow_launcher")

from hydra_plugins.hydra_scaleflow_launcher.launcher import ScaleflowLauncher  # noqa: E402


@pytest.fixture(autouse=True)
def unspecified_hydra_version_base():
    """Hydra's shared launcher suites assume an app that never set `version_base` (chdir into each
    job's dir). The version base is a process-wide singleton, and other tests in this pytest process
    compose with version_base="1.3", so reset it before each test here."""
    from hydra.version import _UNSPECIFIED_, VersionBase

    VersionBase.instance().version_base = _UNSPECIFIED_
    yield


def test_discovered_by_hydra() -> None:
    assert ScaleflowLauncher.__name__ in [p.__name__ for p in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("scaleflow", [])])
class TestScaleflowLauncher(LauncherTestSuite):
    """Hydra's LauncherTestSuite: sweeps of 1 and 2 jobs, hydra overrides, bad keys, custom resolvers."""


@pytest.mark.parametrize("task_launcher_cfg, extra_flags",
                         [({}, ["-m", "hydra/job_logging=hydra_debug", "hydra/job_logging=disabled",
                                "hydra/launcher=scaleflow"])])
class TestScaleflowLauncherIntegration(IntegrationTestSuite):
    """Hydra's IntegrationTestSuite: real apps in subprocesses (task names, sweep dirs, original cwd)."""


def _launch(tmp_path: Path, task, job_overrides, **options):
    """Launch jobs directly, as a sweeper would, and return every JobReturn (Hydra's basic sweeper
    would re-raise the first failure instead)."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import HydraContext, RunMode

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(None))
    cfg = loader.load_configuration(config_name=None, run_mode=RunMode.MULTIRUN,
                                    overrides=["hydra/launcher=scaleflow", f"hydra.sweep.dir={tmp_path}",
                                               "hydra.job.chdir=true"])
    launcher = ScaleflowLauncher(**{"stream_output": False, **options})
    launcher.setup(hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()), task_function=task,
                   config=cfg)
    return launcher.launch(job_overrides, initial_job_idx=0)


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_jobs_run_side_by_side_each_in_its_own_process_and_dir(tmp_path: Path) -> None:
    def task(cfg):
        Path("pid").write_text(str(os.getpid()))
        return os.getpid()

    returns = _launch(tmp_path, task, [["+x=1"], ["+x=2"], ["+x=3"]], n_jobs=2)
    pids = [r.return_value for r in returns]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert [int((tmp_path / str(i) / "pid").read_text()) for i in range(3)] == pids  # returned in order


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_raising_dying_or_hanging_job_is_returned_as_failed_and_the_others_finish(tmp_path: Path) -> None:
    from hydra.core.utils import JobStatus

    def task(cfg):
        import time

        if cfg.x == 2:
            raise ValueError("x=2 is bad")
        if cfg.x == 3:
            os._exit(9)  # the process dies without a result
        if cfg.x == 4:
            time.sleep(600)  # hangs: ended by the launcher's timeout
        return cfg.x * 10

    returns = _launch(tmp_path, task, [["+x=1"], ["+x=2"], ["+x=3"], ["+x=4"]], n_jobs=2, timeout_s=6,
                      kill_grace_s=1)
    assert [r.status for r in returns] == [JobStatus.COMPLETED] + [JobStatus.FAILED] * 3
    assert returns[0].return_value == 10
    with pytest.raises(ValueError, match="x=2 is bad"):
        returns[1].return_value
    with pytest.raises(RuntimeError, match="exited with status 9"):
        returns[2].return_value
    with pytest.raises(RuntimeError, match="timed out after 6 s"):
        returns[3].return_value


def test_bad_launcher_options_are_named() -> None:
    with pytest.raises(ValueError, match="n_jobs"):
        ScaleflowLauncher(n_jobs=0)


APP = '''
import os, time
import hydra

@hydra.main(version_base=None, config_path=None)
def app(cfg):
    with open(os.path.join(os.environ["PID_DIR"], f"{cfg.x}.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)

if __name__ == "__main__":
    app()
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for good; only its parent has not reaped it
        return f.read().split(") ", 1)[1][0] != "Z"


def test_interrupting_the_sweep_ends_every_running_job(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "app.py").write_text(APP)
    pids = tmp_path / "pids"
    pids.mkdir()
    sweep = subprocess.Popen([sys.executable, "app.py", "-m", "hydra/launcher=scaleflow", "hydra.launcher.n_jobs=2",
                              "+x=1,2"], cwd=tmp_path, env={**os.environ, "PID_DIR": str(pids)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        jobs = [int(p.read_text()) for p in pids.iterdir()]
        assert len(jobs) == 2, "the two jobs did not start side by side"
        sweep.send_signal(signal.SIGINT)  # Ctrl-C reaches the sweep, not the jobs' own sessions
        sweep.wait(timeout=60)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in jobs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in jobs)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait(timeout=10)
