"""The exporter extension point: a template method, so a new format writes only its own part.

`Exporter.export` does, for every format:

    1. stage     a private directory beside `<export.dir>/<export.name>/` (a version number is
                 taken only now: `auto` is the next integer, an existing version is never reused)
    2. write     the subclass writes its files into the staging directory          (`write`)
    3. reload    the subclass loads what it wrote, as its consumers will           (`load`)
    4. compare   the reloaded model's outputs against the trained model's on real inputs
    5. seal      `scaleflow_export.json`: identity, SHA-256 of every file, metadata (integrity.py)
    6. rename    atomically to `<version>/` (TensorFlow Serving's layout)

A half-written, unverified or failed model never appears at the final path. Non-chief workers of a
multi-process run go through the same steps in a throw-away directory (their code must run the same
collectives) and report no path.

Example (a format that pickles NumPy weights; `load` returns a predict function):

    class NumpyWeights(Exporter):
        name = "numpy_weights"

        def write(self, model, directory, request):
            np.savez(os.path.join(directory, "weights.npz"), *model.get_weights())
            return {"path": os.path.join(directory, "weights.npz")}

        def load(self, directory, request):
            ...  # rebuild and return `lambda x: outputs`

    # pyproject.toml:  [project.entry-points."scaleflow.exporters"]  numpy_weights = "pkg.mod:NumpyWeights"
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Optional

import numpy as np

from scaleflow.config.schema import ExportConfig
from scaleflow.errors import ScaleflowError
from scaleflow.export import integrity
from scaleflow.export.target import staging_prefix
from scaleflow.identity import model_identity

log = logging.getLogger("scaleflow")


class ExportVerificationError(ScaleflowError):
    pass


@dataclass
class ExportRequest:
    """Everything an exporter is given by the training run.

    Args:
        model: the trained `keras.Model`.
        cfg: the run's config (`cfg.export` holds dir, name, version, verify, tolerance).
        run_dir: the run dir (relative `export.dir` paths are inside it).
        sample: real input records (NumPy, float32) the reloaded model is compared on.
        identity: run_dir, config_hash, data_fingerprint (the export adds name, version, checksum).
        metadata: stored in the integrity file for servers and tools: task, class_names,
            feature_names, feature_stats, vocabularies, ... (JSON-serialisable).
        is_chief: only the chief writes the real path.
        representative: training records (float32) for calibration, e.g. int8 quantization
            (`export.calibration_samples` of them, from this worker's training shard).
        validation: (features, labels) of the run's validation records, for evaluating exports
            (edge accuracy, promotion); None when the run has no validation split.
    """

    model: Any
    cfg: Any
    run_dir: str
    sample: np.ndarray
    identity: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    is_chief: bool = True
    representative: Optional[np.ndarray] = None
    validation: Optional[tuple] = None


class Exporter(abc.ABC):
    """Base class of every exporter; subclasses implement `write` and `load` only.

    Class attributes:
        name: the option name (`export=<name>`), equal to the entry point's name.
        Config: the dataclass typing the `export` node when this exporter is chosen.
        conf: `pkg://...` search path of a plugin's config files (`export/<name>.yaml`), or None.
        backends: the Keras backends whose models it can write (strategy=model_parallel|hybrid train
            on "jax"); the default says TensorFlow only.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = ExportConfig
    conf: ClassVar[str | None] = None
    backends: ClassVar[tuple[str, ...]] = ("tensorflow",)

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Cross-field rules of this exporter's options, run before TensorFlow is imported (raise
        ConfigError naming key, value and what is allowed). Default: nothing to check."""

    @abc.abstractmethod
    def write(self, model: Any, directory: str, request: ExportRequest) -> dict:
        """Write the model into `directory` (it does not exist yet; create it).

        Returns: extra fields for run.json's `export` block; `path` (a file inside `directory`)
        names the artifact when it is not the directory itself.
        """

    @abc.abstractmethod
    def load(self, directory: str, request: ExportRequest) -> Callable[[np.ndarray], np.ndarray]:
        """Reload what `write` wrote, the way its consumers will; return `predict(x) -> outputs`
        comparable with the trained model's outputs (`reference`)."""

    def reference(self, model: Any, sample: np.ndarray) -> np.ndarray:
        """The trained model's outputs on `sample`, the baseline of the comparison."""
        return np.asarray(model(sample, training=False), dtype=np.float32)

    def tolerance(self, cfg) -> float:
        """bfloat16/float16 carry ~3 significant digits: a reloaded graph may round differently."""
        if cfg.trainer.mixed_precision != "off":
            return max(cfg.export.tolerance, 1e-2)
        return cfg.export.tolerance

    # ------------------------------------------------------------------------- the template
    def export(self, request: ExportRequest) -> dict:
        """Stage, write, reload, compare, seal, rename; return run.json's `export` block."""
        cfg = request.cfg
        with staged_version(cfg, request.run_dir, request.is_chief) as (staging, final, version):
            fields = self.write(request.model, staging, request) or {}
            diff = self.verify(staging, request) if cfg.export.verify else None
            identity = model_identity(name=cfg.export.name, version=version,
                                      run_dir=request.identity.get("run_dir", request.run_dir),
                                      config_hash=request.identity.get("config_hash"),
                                      data_fingerprint=request.identity.get("data_fingerprint"),
                                      export_checksum=None)
            sealed = integrity.write_manifest(staging, self.name, identity, request.metadata)
        if not request.is_chief:
            return {"path": None, "format": self.name, "verified": diff is not None, "max_abs_diff": diff}
        artifact = fields.pop("path", None)
        path = os.path.join(final, os.path.relpath(artifact, staging)) if artifact else final
        log.info("exported %s to %s (verified: %s)", self.name, path,
                 "no" if diff is None else f"max abs diff {diff:.2g}")
        return {"path": path, "dir": final, "format": self.name, "version": version,
                "verified": diff is not None, "max_abs_diff": diff, "checksum": sealed["checksum"],
                "identity": sealed["identity"], **fields}

    def verify(self, directory: str, request: ExportRequest) -> float:
        """Max abs difference of the reloaded model against the trained one; raises past tolerance."""
        predict = self.load(directory, request)
        got = np.asarray(predict(request.sample), dtype=np.float32)
        expected = self.reference(request.model, request.sample)
        diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
        tolerance = self.tolerance(request.cfg)
        if not np.all(np.isfinite(got)) or not diff <= tolerance:
            raise ExportVerificationError(
                f"export verification failed: the reloaded {self.name} model differs from the trained model "
                f"by {diff:.3g} > tolerance {tolerance} (export.tolerance), or gave non-finite outputs")
        return diff


def export_root(cfg, run_dir: str) -> str:
    directory = os.path.expanduser(cfg.export.dir)
    if not os.path.isabs(directory):
        directory = os.path.join(run_dir, directory)
    return os.path.join(directory, cfg.export.name)


def next_version(root: str, requested: Any) -> int:
    existing = [int(d) for d in os.listdir(root) if d.isdigit()] if os.path.isdir(root) else []
    if requested == "auto":
        return max(existing, default=0) + 1
    if int(requested) in existing:
        raise ScaleflowError(f"export.version={requested}: {os.path.join(root, str(requested))} already exists; "
                             "versions are never overwritten (use export.version=auto for the next one)")
    return int(requested)


@contextlib.contextmanager
def staged_version(cfg, run_dir: str, is_chief: bool = True) -> Iterator[tuple[str, str, int | None]]:
    """Yields (staging dir, final dir, version). On success the staging dir is renamed to the final
    dir; on failure it is removed. Non-chief workers stage in a private temp dir that is discarded."""
    if not is_chief:
        tmp = tempfile.mkdtemp(prefix="scaleflow-export-")
        try:
            yield os.path.join(tmp, "model"), os.path.join(tmp, "model"), None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    root = export_root(cfg, run_dir)
    os.makedirs(root, exist_ok=True)
    version = next_version(root, cfg.export.version)
    final = os.path.join(root, str(version))
    # The name says which host and pid write it: a later run removes it only once that process is gone.
    staging = tempfile.mkdtemp(prefix=staging_prefix(version), dir=root)
    os.rmdir(staging)  # exporters create it themselves
    try:
        yield staging, final, version
        if os.path.exists(final):
            raise ScaleflowError(f"{final} appeared while exporting; not overwriting it")
        os.rename(staging, final)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
