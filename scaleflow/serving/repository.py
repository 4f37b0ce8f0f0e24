"""The version directories of one model, kept in step with what is on disk.

`<model_dir>/` holds TF Serving's layout, `1/`, `2/`, ..., each sealed by `scaleflow_export.json`,
and `labels.json` (`{"stable": 3, "canary": 4}`, written by promotion / `mode=deploy`). Every
`serve.poll_s` the repository re-reads it:

- a version is served only when `verify_export` passes: a half-written, unverified or tampered
  directory is refused and the reason logged (once per change of the directory);
- served: the latest verified version, the versions in `serve.versions`, and the labelled ones;
- a version that appears is loaded and warmed up (its `assets.extra/tf_serving_warmup_requests`)
  before it takes requests, with no restart; one that disappears, stops verifying or is no longer
  wanted is unloaded (requests already holding it finish).

Example:
    repo = Repository(settings)
    repo.poll()                          # load what is there now
    repo.get()                           # the latest servable; repo.get(version=2), repo.get(label="stable")
    repo.start()                         # keep polling in a thread
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from scaleflow.export.integrity import verify_export
from scaleflow.identity import short

log = logging.getLogger("scaleflow.serve")

TF_DTYPES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16",
             "int32": "DT_INT32", "int64": "DT_INT64", "uint8": "DT_UINT8", "int8": "DT_INT8",
             "string": "DT_STRING", "bool": "DT_BOOL"}


class NotFound(LookupError):
    """No servable answers the request (unknown version or label, nothing loaded)."""


class NotReady(RuntimeError):
    """The first read of the model dir (load and warm-up) has not finished in this process."""


@dataclass
class Servable:
    """One loaded version: its predict function, signature and integrity manifest.

    Args:
        version: the version number (its directory name).
        path: the version directory.
        manifest: its `scaleflow_export.json` (identity, metadata incl. feature_stats, class_names).
        predict: `predict(x) -> {output name: array}` over `serving_default` (thread-safe).
        input_name, input_dtype, input_shape: the signature's one input (None dims are free).
        outputs: {output name: (dtype name, shape)} of the signature, e.g. scores, class_id, class_name.
    """

    version: int
    path: str
    manifest: dict
    predict: Callable[[np.ndarray], dict]
    input_name: str
    input_dtype: str
    input_shape: tuple
    outputs: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # per-process helpers: batcher

    @property
    def identity(self) -> dict:
        return self.manifest.get("identity") or {}

    @property
    def metadata(self) -> dict:
        return self.manifest.get("metadata") or {}

    @property
    def checksum_short(self) -> str:
        return str(self.identity.get("export_checksum") or self.manifest.get("checksum") or "") \
            .removeprefix("sha256:")[:12]

    @property
    def ref(self) -> str:
        return short({**self.identity, "version": self.version})

    def signature_def(self) -> dict:
        """The `serving_default` SignatureDef as TF Serving's metadata endpoint prints it."""
        def tensor(dtype: str, shape: tuple, tensor_name: str) -> dict:
            return {"dtype": TF_DTYPES.get(dtype, "DT_INVALID"), "name": tensor_name,
                    "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape],
                                     "unknown_rank": False}}

        return {"inputs": {self.input_name: tensor(self.input_dtype, self.input_shape,
                                                   f"serving_default_{self.input_name}:0")},
                "outputs": {name: tensor(dtype, shape, f"StatefulPartitionedCall:{i}")
                            for i, (name, (dtype, shape)) in enumerate(sorted(self.outputs.items()))},
                "method_name": "tensorflow/serving/predict"}


def load_saved_model(path: str, manifest: dict) -> Servable:
    """Load a SavedModel version dir through its `serving_default` signature (imports TensorFlow).
    Every output of the signature is returned, as TF Serving does (scores, class_id, class_name...)."""
    from scaleflow import tf_logging

    tf = tf_logging.import_tensorflow()  # without TF's C++ start-up lines

    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (input_name, spec), = signature.structured_input_signature[1].items()

    def predict(x: np.ndarray) -> dict:
        outputs = signature(**{input_name: tf.constant(x, dtype=spec.dtype)})
        return {name: value.numpy() for name, value in outputs.items()}

    predict.loaded = loaded  # signatures die with the object that loaded them
    outputs = {name: (s.dtype.name, tuple(s.shape.as_list())) for name, s in signature.structured_outputs.items()}
    return Servable(version=int(os.path.basename(path)), path=path, manifest=manifest, predict=predict,
                    input_name=input_name, input_dtype=spec.dtype.name, input_shape=tuple(spec.shape.as_list()),
                    outputs=outputs)


def warm_up(servable: Servable) -> int:
    """Replay the export's TF Serving warm-up requests; returns how many ran."""
    from scaleflow.export.warmup import read_warmup

    count = 0
    for inputs in read_warmup(servable.path):
        x = inputs.get(servable.input_name)
        if x is None and len(inputs) == 1:
            x = next(iter(inputs.values()))
        if x is None:
            raise ValueError(f"a warm-up request names inputs {sorted(inputs)}, not {servable.input_name!r}")
        servable.predict(x)
        count += 1
    return count


def _fingerprint(directory: str) -> tuple:
    """(path, size, mtime) of every file: re-verifying is needed only when this changes."""
    entries = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append((os.path.relpath(path, directory), st.st_size, st.st_mtime_ns))
    return tuple(entries)


@dataclass
class _Seen:
    fingerprint: tuple
    ok: bool
    reason: str
    manifest: dict | None
    load_error: str | None = None


class Repository:
    """The served versions of the model in `settings.model_dir`.

    Args:
        settings: `ServeSettings` (model_dir, name, versions, poll_s, warmup).
        loader: `loader(path, manifest) -> Servable` (TensorFlow's SavedModel loader by default).
        on_load, on_unload: called with the Servable after it is loaded / before it is dropped.
    """

    def __init__(self, settings, loader: Callable[[str, dict], Servable] = load_saved_model,
                 on_load: Callable[[Servable], Any] | None = None,
                 on_unload: Callable[[Servable], Any] | None = None):
        self.settings = settings
        self.root = settings.model_dir
        self.loader, self.on_load, self.on_unload = loader, on_load, on_unload
        self._servables: dict[int, Servable] = {}
        self._seen: dict[int, _Seen] = {}
        self.labels: dict[str, int] = {}
        self._labels_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0

    # ------------------------------------------------------------------------------- queries
    @property
    def versions(self) -> list[int]:
        return sorted(self._servables)

    def get(self, version: int | None = None, label: str | None = None) -> Servable:
        servables = self._servables
        name = self.settings.name
        if label is not None:
            if label not in self.labels:
                raise NotFound(f"Servable not found for request: Label({name}, {label}): no version has "
                               f"label {label!r} (labels: {', '.join(sorted(self.labels)) or 'none'})")
            version = self.labels[label]
            if version not in servables:
                raise NotFound(f"Servable not found for request: Label({name}, {label}): version {version} "
                               f"is not loaded{self._why(version)}")
        if version is None:
            if not servables:
                raise NotFound(f"Servable not found for request: Latest({name})")
            return servables[max(servables)]
        if version not in servables:
            raise NotFound(f"Servable not found for request: Specific({name}, {version}){self._why(version)}")
        return servables[version]

    def _why(self, version: int) -> str:
        seen = self._seen.get(version)
        if seen is None:
            return ""
        return f" ({seen.load_error or seen.reason})" if not seen.ok or seen.load_error else ""

    def status(self, version: int | None = None) -> list[dict]:
        """TF Serving's `model_version_status` list: loaded versions AVAILABLE, refused ones END with why."""
        rows = []
        for v in sorted(set(self._servables) | {v for v, s in self._seen.items() if not s.ok or s.load_error},
                        reverse=True):
            if version is not None and v != version:
                continue
            if v in self._servables:
                rows.append({"version": str(v), "state": "AVAILABLE",
                             "status": {"error_code": "OK", "error_message": ""}})
            else:
                seen = self._seen[v]
                rows.append({"version": str(v), "state": "END",
                             "status": {"error_code": "FAILED_PRECONDITION",
                                        "error_message": seen.load_error or seen.reason}})
        return rows

    # ------------------------------------------------------------------------------- polling
    def start(self) -> threading.Thread:
        """Poll every `poll_s` in a daemon thread until `stop()`."""
        def loop():
            while not self._stop.wait(self.settings.poll_s):
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - the watcher must outlive one bad poll
                    log.exception("model directory poll failed: %s", self.root)

        self._thread = threading.Thread(target=loop, name="scaleflow-version-watcher", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()

    def poll(self) -> None:
        """Read the model dir once: verify what changed, load what is wanted, unload the rest."""
        with self._lock:
            self._poll()
            self.polls += 1

    def _poll(self) -> None:
        try:
            present = sorted(int(d) for d in os.listdir(self.root)
                             if d.isdigit() and os.path.isdir(os.path.join(self.root, d)))
        except OSError as e:
            log.error("cannot read the model directory %s: %s", self.root, e.strerror)
            present = []
        for version in [v for v in self._seen if v not in present]:
            del self._seen[version]
            if version in self._servables:
                self._unload(version, "its directory was removed")
        for version in present:
            self._check(version)
        self._read_labels()
        verified = [v for v in present if self._seen[v].ok and not self._seen[v].load_error]
        wanted = set(verified[-1:]) | (set(self.settings.versions) | set(self.labels.values())) & set(verified)
        for version in sorted(wanted - set(self._servables)):
            self._load(version)
        # Once the newest version is up, older ones that are neither pinned nor labelled go.
        for version in sorted(set(self._servables) - wanted):
            self._unload(version, "a newer version is served and this one is neither in serve.versions nor labelled")

    def _check(self, version: int) -> None:
        path = os.path.join(self.root, str(version))
        fingerprint = _fingerprint(path)
        seen = self._seen.get(version)
        if seen is not None and seen.fingerprint == fingerprint:
            return
        result = verify_export(path)
        self._seen[version] = _Seen(fingerprint, result.ok, result.reason, result.manifest)
        if result.ok:
            return
        if seen is None or seen.reason != result.reason:
            log.warning("refusing version %d of model %s at %s: %s", version, self.settings.name, path, result.reason)
        if version in self._servables:
            self._unload(version, f"its files no longer match their checksums ({result.reason})")

    def _read_labels(self) -> None:
        from scaleflow.deploy.labels import read_labels

        try:
            labels = read_labels(self.root)
            error = None
        except Exception as e:  # noqa: BLE001 - a bad labels.json must not stop serving
            labels, error = self.labels, str(e)
        if error and error != self._labels_error:
            log.error("labels: %s (keeping %s)", error, labels or "no labels")
        self._labels_error = error
        if labels != self.labels:
            log.info("labels of model %s: %s", self.settings.name,
                     ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none")
            self.labels = dict(labels)

    def _load(self, version: int) -> None:
        path = os.path.join(self.root, str(version))
        seen = self._seen[version]
        started = time.perf_counter()
        try:
            servable = self.loader(path, seen.manifest or {})
            warmed = warm_up(servable) if self.settings.warmup else 0
        except Exception as e:  # noqa: BLE001 - one bad version must not take the server down
            seen.load_error = f"failed to load: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.error("refusing version %d of model %s at %s: %s", version, self.settings.name, path, seen.load_error)
            return
        if self.on_load is not None:
            self.on_load(servable)
        self._servables = {**self._servables, version: servable}
        log.info("serving %s from %s (loaded in %.2fs, %d warm-up requests)", servable.ref, path,
                 time.perf_counter() - started, warmed)

    def _unload(self, version: int, why: str) -> None:
        servable = self._servables.get(version)
        if servable is None:
            return
        self._servables = {v: s for v, s in self._servables.items() if v != version}
        if self.on_unload is not None:
            self.on_unload(servable)
        log.info("unloaded %s: %s", servable.ref, why)


def served_versions(model_dir: str) -> tuple[list[int], dict[int, str]]:
    """(verified versions, {refused version: reason}) under `model_dir`, without TensorFlow."""
    ok, refused = [], {}
    try:
        names = sorted((d for d in os.listdir(model_dir) if d.isdigit()), key=int)
    except OSError:
        return [], {}
    for name in names:
        path = os.path.join(model_dir, name)
        if not os.path.isdir(path):
            continue
        result = verify_export(path)
        if result.ok:
            ok.append(int(name))
        else:
            refused[int(name)] = result.reason
    return ok, refused
