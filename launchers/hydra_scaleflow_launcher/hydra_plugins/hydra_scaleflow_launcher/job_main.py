"""Entry point of a job process: `python -m hydra_plugins.hydra_scaleflow_launcher.job_main JOB RETURN`.

Loads the job written by `JobProcess`, runs it with Hydra's own `run_job` (run dir, logging, callbacks,
`.hydra/` files exactly as with the basic launcher) and writes the `JobReturn` back."""

from __future__ import annotations

import os
import pickle
import sys
import traceback

try:
    import cloudpickle
except ImportError:
    from joblib.externals import cloudpickle


class JobFailed(RuntimeError):
    """Stands in for a job's exception that cannot be pickled; carries its type, message and traceback."""


def _picklable(ret):
    try:
        cloudpickle.dumps(ret)
        return ret
    except Exception:  # noqa: BLE001 - fall back to a picklable description of the result
        value = ret._return_value
        if isinstance(value, BaseException):
            tb = "".join(traceback.format_exception(type(value), value, value.__traceback__))
            ret._return_value = JobFailed(f"{type(value).__name__}: {value}\n{tb}")
        else:
            ret._return_value = repr(value)
        return ret


def main(job_file: str, return_file: str) -> int:
    with open(job_file, "rb") as f:
        parent_path = pickle.load(f)
        sys.path.extend(p for p in parent_path if p not in sys.path)
        job = pickle.load(f)

    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    setup_globals()
    Singleton.set_state(job["singleton_state"])
    HydraConfig.instance().set_config(job["sweep_config"])
    ret = run_job(hydra_context=job["hydra_context"], config=job["sweep_config"], task_function=job["task_function"],
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    if ret.status.name == "FAILED":
        value = ret._return_value
        traceback.print_exception(type(value), value, value.__traceback__)
    tmp = return_file + ".tmp"
    with open(tmp, "wb") as f:
        cloudpickle.dump(_picklable(ret), f)
    os.replace(tmp, return_file)  # the parent sees a whole result or none
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
