"""What every server process is told: `serve.*` resolved to plain values.

KServe starts extra workers with `multiprocessing`'s spawn, pickling the server object, so the
settings are a plain dataclass (no OmegaConf, no TensorFlow objects).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class ServeSettings:
    """Args:
        model_dir: `<export.dir>/<name>`, holding version dirs `1/`, `2/`, ... and `labels.json`.
        name: the model name in URLs.
        host, port: where to listen (127.0.0.1 unless configured).
        versions: versions served beside the latest and the labelled ones.
        poll_s: how often the model dir is re-read (new, removed, changed versions; labels).
        max_batch_size, batch_timeout_s: dynamic batching (max_batch_size 1: off).
        workers: server processes behind the port.
        threads: concurrent model calls per process (single requests, or batches when batching).
        max_body_bytes: larger bodies are refused with 413.
        warmup: replay the export's warm-up requests before a version is served.
        drift_window, drift_threshold: PSI per feature over this many rows; above it is logged.
        grace_s: how long in-flight requests may take after SIGTERM.
        state_dir: where workers mark themselves ready (the server is ready when all are).
        auth_token_file: bearer tokens (security/auth.py), "" for none.
    """

    model_dir: str
    name: str
    host: str = "127.0.0.1"
    port: int = 8501
    versions: list[int] = field(default_factory=list)
    poll_s: float = 2.0
    max_batch_size: int = 64
    batch_timeout_s: float = 0.002
    workers: int = 1
    threads: int = 2
    max_body_bytes: int = 10 << 20
    warmup: bool = True
    drift_window: int = 1000
    drift_threshold: float = 0.2
    grace_s: float = 30.0
    state_dir: str = ""
    auth_token_file: str = ""

    @classmethod
    def from_config(cls, serve, model_dir: str) -> "ServeSettings":
        model_dir = os.path.abspath(model_dir)
        return cls(model_dir=model_dir, name=serve.name or os.path.basename(model_dir.rstrip(os.sep)),
                   host=serve.host, port=int(serve.port), versions=[int(v) for v in serve.versions],
                   poll_s=float(serve.poll_s), max_batch_size=int(serve.max_batch_size),
                   batch_timeout_s=float(serve.batch_timeout_ms) / 1000.0, workers=int(serve.workers),
                   threads=int(serve.threads), max_body_bytes=int(serve.max_body_bytes), warmup=bool(serve.warmup),
                   drift_window=int(serve.drift_window), drift_threshold=float(serve.drift_threshold),
                   grace_s=float(serve.grace_s),
                   auth_token_file=os.path.abspath(os.path.expanduser(serve.auth_token_file))
                   if serve.get("auth_token_file") else "")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1
