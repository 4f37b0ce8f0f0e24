"""One Horovod rank of a job started by `launcher.py`: `python -m scaleflow_horovod.worker
--run-dir DIR --config BASE64_YAML`. It trains the already validated config in the shared run dir
(only rank 0 writes run.json, checkpoints of record and the export)."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys

from omegaconf import OmegaConf

from scaleflow.errors import ScaleflowError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scaleflow_horovod.worker")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config", required=True, help="the resolved job config, YAML in base64")
    args = parser.parse_args(argv)
    cfg = OmegaConf.create(base64.b64decode(args.config).decode())
    rank = os.environ.get("HOROVOD_RANK", "0")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format=f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s")
    from scaleflow.training.train import run

    try:
        run(cfg, args.run_dir)
    except ScaleflowError as e:
        print(f"scaleflow: error (rank {rank}): {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
