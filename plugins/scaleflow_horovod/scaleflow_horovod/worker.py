"""One Horovod rank of a job started by `launcher.py`: `python -m scaleflow_horovod.worker
--run-dir DIR --config FILE` (the resolved config, YAML, readable by its owner only). It trains the
already validated config in the shared run dir (only rank 0 writes run.json, checkpoints of record and
the export), or runs its mode (predict: this rank's part of the records)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time

from omegaconf import OmegaConf

from scaleflow.errors import ScaleflowError
from scaleflow_horovod.launcher import LAUNCHER_PID_ENV


def exit_with_launcher(poll_s: float = 0.5) -> None:
    """End this rank as soon as the launching scaleflow process is gone (killed, interrupted): an
    orphaned rank would keep writing checkpoints into a run dir that a resumed job is reading."""
    host, _, pid = os.environ.get(LAUNCHER_PID_ENV, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return
    launcher_pid = int(pid)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            try:
                os.kill(launcher_pid, 0)
            except ProcessLookupError:
                print(f"scaleflow: launcher (pid {launcher_pid}) is gone; ending this rank", file=sys.stderr)
                os._exit(1)  # noqa: SLF001 - no cleanup: the job is being torn down
            except PermissionError:
                pass  # alive, owned by someone else

    threading.Thread(target=watch, name="scaleflow-launcher-watch", daemon=True).start()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scaleflow_horovod.worker")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config", required=True, help="a file holding the resolved job config (YAML)")
    args = parser.parse_args(argv)
    cfg = OmegaConf.load(args.config)
    rank = os.environ.get("HOROVOD_RANK", "0")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format=f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s")
    exit_with_launcher()
    if cfg.get("mode", "train") == "train":
        from scaleflow.training.train import run
    else:  # e.g. mode=predict: each rank predicts its part of the records
        from scaleflow.modes import run_mode as run

    from scaleflow.signals import TrainingInterrupted

    try:
        run(cfg, args.run_dir)
    except TrainingInterrupted as e:
        print(f"scaleflow: interrupted (rank {rank}): {e}", file=sys.stderr)
        # Under scaleflow's launcher (which forwarded the signal and reports it), a clean stop is a
        # success for horovodrun: a non-zero status makes it SIGSTOP and kill the other ranks, maybe
        # before rank 0 has recorded the interruption in run.json.
        return 0 if os.environ.get(LAUNCHER_PID_ENV) else e.exit_code
    except ScaleflowError as e:
        print(f"scaleflow: error (rank {rank}): {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
