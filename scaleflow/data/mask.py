"""Masking sensitive columns as records are read (`data.mask`), before anything else sees them.

    data:
      mask:
        email: hash                              # keyed HMAC-SHA256 (a pseudonym, stable per key)
        name: drop                               # the column is gone
        age: {method: bucket, edges: [18, 30, 50, 65]}   # -> bucket number 0..4
        income: {method: noise, scale: 500.0}    # + Gaussian noise (sd 500), seeded by data.seed
      mask_key_env: SCALEFLOW_MASK_KEY           # the HMAC key: an environment variable ...
      mask_key_file: null                        # ... or a file holding it (never the key itself)

The table is masked right after it is parsed, so the vocabulary, the statistics, the shards and
their keys (`mode=shards`), run.json, logs, TensorBoard and the export metadata only ever see masked
values. `hash` suits identifiers and categories (list the column in `data.categorical_columns`, or
use it as `data.shard_key`); `bucket` and `noise` need numbers. Bucket i holds
`edges[i-1] <= value < edges[i]` (0 below the first edge, len(edges) from the last one).

Errors name the rule and never the raw value: a rule naming no column, `hash` without a key, a
missing key variable or file, a non-numeric cell under `bucket`/`noise` (exit 2, before TensorFlow).
Supported by data=csv (columns by name), data=npz (features of a 2-D `x` as f0, f1, ...) and
data=tfrecord (features by name, masked in the parse step: drop, bucket, noise per element); there
`hash` applies to the record key (data.shard_key), whose values it pseudonymises.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from scaleflow.errors import ConfigError, DataError, did_you_mean, one_of

METHODS = ("drop", "hash", "bucket", "noise")
SUPPORTED_DATASETS = ("csv", "npz", "tfrecord")
HASH_HEX = 16  # 64 bits of the HMAC: pseudonyms stay distinct for any realistic column


@dataclass(frozen=True)
class Rule:
    column: str
    method: str
    edges: tuple = ()
    scale: float = 0.0


def rules(config: Any) -> list[Rule]:
    """`data.mask` parsed; ConfigError naming the rule for anything malformed."""
    mask = config.get("mask") if hasattr(config, "get") else None
    out = []
    for column, spec in (dict(mask) if mask else {}).items():
        key = f"data.mask.{column}"
        if isinstance(spec, str):
            spec = {"method": spec}
        elif hasattr(spec, "items"):
            spec = dict(spec.items())
        else:
            raise ConfigError(key, spec, "a method (drop, hash, bucket, noise) or {method: ..., ...}")
        method = spec.get("method")
        if method not in METHODS:
            raise ConfigError(f"{key}.method" if "method" in spec else key, method, one_of(METHODS),
                              did_you_mean(method, METHODS))
        unknown = set(spec) - {"method", "edges", "scale"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}", spec[sorted(unknown)[0]], "method, edges (bucket) or scale (noise)")
        edges: tuple = ()
        scale = 0.0
        if method == "bucket":
            raw = spec.get("edges")
            try:
                edges = tuple(float(e) for e in raw)
            except (TypeError, ValueError):
                edges = ()
            if not edges or list(edges) != sorted(set(edges)):
                raise ConfigError(f"{key}.edges", raw, "a non-empty increasing list of numbers, e.g. [18, 30, 65]")
        if method == "noise":
            scale = spec.get("scale")
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
                raise ConfigError(f"{key}.scale", scale, "a number > 0 (the standard deviation of the noise)")
        out.append(Rule(str(column), method, edges, float(scale)))
    return out


def hash_key(config: Any) -> bytes:
    """The HMAC key from `data.mask_key_env` or `data.mask_key_file`; ConfigError when absent."""
    env, path = config.get("mask_key_env"), config.get("mask_key_file")
    if env:
        value = os.environ.get(str(env))
        if not value:
            raise ConfigError("data.mask_key_env", env, "the name of a set, non-empty environment variable",
                              "Export it before the run (the key is never put in the config)")
        return value.encode()
    if path:
        try:
            with open(os.path.expanduser(str(path)), "rb") as f:
                value = f.read().strip()
        except OSError as e:
            raise ConfigError("data.mask_key_file", path, "a readable file holding the HMAC key", e.strerror) from None
        if not value:
            raise ConfigError("data.mask_key_file", path, "a file holding the HMAC key", "The file is empty")
        return value
    raise ConfigError("data.mask_key_env", None, "an environment variable (or data.mask_key_file) holding the "
                      "HMAC key", "`hash` masking needs a key: e.g. data.mask_key_env=SCALEFLOW_MASK_KEY")


def check_config(cfg: Any) -> None:
    """Config-only checks (validation, before any data is read)."""
    data = cfg.data
    parsed = rules(data)
    if not parsed:
        return
    if data.get("name") not in SUPPORTED_DATASETS:
        raise ConfigError("data.mask", dict(data.mask), f"no masking with data={data.get('name')}",
                          f"Masking is supported by data={', data='.join(SUPPORTED_DATASETS)} (columns by name)")
    if any(r.method == "hash" for r in parsed):
        hash_key(data)
    if data.get("name") == "tfrecord":  # feature names are in the config: checked before any read
        names = list(data.features) + ([data.shard_key] if data.get("shard_key") else [])
        for rule in parsed:
            if rule.column not in names:
                raise ConfigError(f"data.mask.{rule.column}", rule.method, one_of(names) + " (data.features, "
                                  "data.shard_key)", did_you_mean(rule.column, names) or "A mask rule must name a feature")
        if set(names) - {data.get("shard_key")} <= {r.column for r in parsed if r.method == "drop"}:
            raise ConfigError("data.mask", dict(data.mask), "at least one feature left after drop")


class Masking:
    """The rules of a config, bound to their key: `apply(header, cells)` masks a parsed table.

    Example:
        >>> m = Masking([Rule("age", "bucket", (18.0, 65.0))])
        >>> m.apply("people.csv", ["age", "y"], np.array([["12", "0"], ["40", "1"]]))[1].tolist()
        [['0', '0'], ['1', '1']]
    """

    def __init__(self, rules_: Sequence[Rule], key: Optional[bytes] = None, seed: int = 0):
        self.rules, self.key, self.seed = list(rules_), key, int(seed)

    @classmethod
    def from_config(cls, config: Any) -> Optional["Masking"]:
        parsed = rules(config)
        if not parsed:
            return None
        key = hash_key(config) if any(r.method == "hash" for r in parsed) else None
        return cls(parsed, key, config.get("seed", 0) or 0)

    def token(self) -> str:
        """What identifies this masking in a cache key (the key only as its digest)."""
        digest = hashlib.sha256(self.key).hexdigest()[:16] if self.key else None
        return repr((self.rules, digest, self.seed))

    def pseudonym(self, value: str) -> str:
        return hmac.digest(self.key, value.encode(), "sha256")[: HASH_HEX // 2].hex()  # one-shot C HMAC

    def _pseudonyms(self, values: list[str]) -> list[str]:
        """`pseudonym` of each value, once per distinct value. The hot loop of hash masking: HMAC
        (RFC 2104) from precomputed inner/outer SHA-256 states is ~4x faster here than a one-shot
        `hmac.digest` per value (which sets up OpenSSL's HMAC each time); the test checks equality."""
        block = self.key if len(self.key) <= 64 else hashlib.sha256(self.key).digest()
        block = block.ljust(64, b"\0")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        memo: dict[str, str] = {}
        out = []
        for value in values:
            p = memo.get(value)
            if p is None:
                i = inner.copy()
                i.update(value.encode())
                o = outer.copy()
                o.update(i.digest())
                p = memo[value] = o.digest()[: HASH_HEX // 2].hex()
            out.append(p)
        return out

    def apply(self, path: str, header: list[str], cells: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(header, cells) with every rule applied; dropped columns removed."""
        masked_columns: dict[int, np.ndarray] = {}
        for i, rule in enumerate(self.rules):
            if rule.column not in header:
                raise ConfigError(f"data.mask.{rule.column}", rule.method, one_of(header) + f" (columns of {path})",
                                  did_you_mean(rule.column, header) or "A mask rule must name a column")
            c = header.index(rule.column)
            values = cells[:, c]
            missing = _missing(values)
            if rule.method == "hash":
                masked = np.where(missing, values, np.array(self._pseudonyms(values.tolist())))
            elif rule.method in ("bucket", "noise"):
                numbers = np.zeros(len(values))
                try:
                    numbers[~missing] = list(map(float, values[~missing].tolist()))  # faster than astype
                except ValueError:
                    bad = next(r for r, (v, m) in enumerate(zip(values.tolist(), missing)) if not m and not _is_number(v))
                    raise DataError(path, f"data.mask.{rule.column}={rule.method} needs numbers; record {bad} is not "
                                    "one (its value is not shown: the column is masked)", column=rule.column) from None
                if rule.method == "bucket":
                    out = np.searchsorted(np.asarray(rule.edges), numbers, side="right").astype(str)
                else:
                    rng = np.random.default_rng([self.seed, i, 0x6D61736B])  # the same noise in every process
                    out = np.char.mod("%.7g", numbers + rng.normal(0.0, rule.scale, len(numbers)))
                masked = np.where(missing, values, out)
            else:
                continue
            masked_columns[c] = masked if masked.dtype.kind == "U" else masked.astype(str)
        dropped = sorted({header.index(r.column) for r in self.rules if r.method == "drop"})
        width = max([cells.dtype.itemsize // 4] + [m.dtype.itemsize // 4 for m in masked_columns.values()])
        keep = [j for j in range(len(header)) if j not in dropped]
        # One copy: the kept columns, widened only if a masked value needs it.
        kept = cells if len(keep) == len(header) else cells[:, keep]
        out = kept.astype(f"<U{max(width, 1)}") if width > cells.dtype.itemsize // 4 else kept.copy()
        for c, masked in masked_columns.items():
            if c in keep:
                out[:, keep.index(c)] = masked
        return [header[j] for j in keep], out


def mask_features(x: np.ndarray, path: str, masking: Optional["Masking"], key_name: Optional[str] = None) -> np.ndarray:
    """A numeric feature matrix (records x features, features named f0, f1, ...) masked; `hash`
    applies only to the key array `key_name` (see `mask_keys`)."""
    if masking is None:
        return x
    names = [f"f{j}" for j in range(x.shape[1])] if x.ndim == 2 else []
    x = np.array(x, dtype=np.float64, copy=True)
    dropped = []
    for i, rule in enumerate(masking.rules):
        if rule.column == key_name:
            continue
        if rule.column not in names:
            raise ConfigError(f"data.mask.{rule.column}", rule.method,
                              (one_of(names) + f" (features of {path})") if names else "features of a 2-D array",
                              did_you_mean(rule.column, names) or "A mask rule must name a feature")
        j = names.index(rule.column)
        if rule.method == "drop":
            dropped.append(j)
        elif rule.method == "bucket":
            x[:, j] = np.searchsorted(np.asarray(rule.edges), x[:, j], side="right")
        elif rule.method == "noise":
            x[:, j] += np.random.default_rng([masking.seed, i, 0x6D61736B]).normal(0.0, rule.scale, len(x))
        else:
            raise ConfigError(f"data.mask.{rule.column}", "hash", "drop, bucket or noise for a numeric feature",
                              "hash pseudonymises identifiers: use it on data.shard_key")
    return np.delete(x, dropped, axis=1) if dropped else x


def tensorflow_feature_masks(masking: Optional["Masking"], names: list[str], key_name: Optional[str]) -> dict:
    """{feature: fn(float tensor) -> masked tensor} for TFRecord features (bucket, noise)."""
    if masking is None:
        return {}
    import tensorflow as tf

    out = {}
    for i, rule in enumerate(masking.rules):
        if rule.column == key_name or rule.method == "drop":
            continue
        if rule.column not in names:
            raise ConfigError(f"data.mask.{rule.column}", rule.method, one_of(names) + " (data.features)",
                              did_you_mean(rule.column, names) or "A mask rule must name a feature")
        if rule.method == "hash":
            raise ConfigError(f"data.mask.{rule.column}", "hash", "drop, bucket or noise for a numeric feature",
                              "hash pseudonymises identifiers: use it on data.shard_key")
        if rule.method == "bucket":
            boundaries = [float(e) for e in rule.edges]
            out[rule.column] = lambda v, b=boundaries: tf.cast(tf.raw_ops.Bucketize(input=v, boundaries=b), tf.float32)
        else:
            out[rule.column] = lambda v, s=rule.scale, n=i: v + tf.random.normal(tf.shape(v), stddev=s,
                                                                                    seed=masking.seed * 1000 + n)
    return out


def mask_keys(keys: np.ndarray, masking: Optional["Masking"], key_name: str) -> np.ndarray:
    """Record keys (data.shard_key) with the key's own rule applied (hash: pseudonyms)."""
    rule = next((r for r in masking.rules if r.column == key_name), None) if masking else None
    if rule is None:
        return keys
    if rule.method != "hash":
        raise ConfigError(f"data.mask.{key_name}", rule.method, "hash for the record key (data.shard_key)")
    return np.array(masking._pseudonyms([str(k) for k in np.asarray(keys).tolist()]), dtype=object)


def _missing(values: np.ndarray) -> np.ndarray:
    """`tabular.missing_mask`, lowering only the short cells (every missing marker has <= 4 chars)."""
    from scaleflow.data.tabular import MISSING

    missing = np.zeros(len(values), dtype=bool)
    short = np.flatnonzero(np.char.str_len(values) <= max(map(len, MISSING)))
    if len(short):
        missing[short] = np.isin(np.char.lower(values[short]), MISSING)
    return missing


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False
