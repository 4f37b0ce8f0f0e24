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
Supported by data=csv (columns by name).
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
SUPPORTED_DATASETS = ("csv",)
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
        return hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:HASH_HEX]

    def apply(self, path: str, header: list[str], cells: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(header, cells) with every rule applied; dropped columns removed."""
        from scaleflow.data.tabular import missing_mask

        columns = [cells[:, j].astype(str) for j in range(len(header))]
        for i, rule in enumerate(self.rules):
            if rule.column not in header:
                raise ConfigError(f"data.mask.{rule.column}", rule.method, one_of(header) + f" (columns of {path})",
                                  did_you_mean(rule.column, header) or "A mask rule must name a column")
            c = header.index(rule.column)
            values = columns[c]
            missing = missing_mask(values)
            if rule.method == "hash":
                unique, inverse = np.unique(values, return_inverse=True)  # one HMAC per distinct value
                masked = np.where(missing, values, np.array([self.pseudonym(v) for v in unique.tolist()])[inverse])
            elif rule.method in ("bucket", "noise"):
                numbers = np.zeros(len(values))
                try:
                    numbers[~missing] = values[~missing].astype(np.float64)
                except ValueError:
                    bad = next(r for r, (v, m) in enumerate(zip(values.tolist(), missing)) if not m and not _is_number(v))
                    raise DataError(path, f"data.mask.{rule.column}={rule.method} needs numbers; record {bad} is not "
                                    "one (its value is not shown: the column is masked)", column=rule.column) from None
                if rule.method == "bucket":
                    out = np.searchsorted(np.asarray(rule.edges), numbers, side="right").astype(str)
                else:
                    rng = np.random.default_rng([self.seed, i, 0x6D61736B])  # the same noise in every process
                    out = (numbers + rng.normal(0.0, rule.scale, len(numbers))).astype(str)
                masked = np.where(missing, values, out)
            else:
                continue
            columns[c] = masked.astype(str)
        dropped = [header.index(r.column) for r in self.rules if r.method == "drop"]
        keep = [j for j in range(len(header)) if j not in dropped]
        out_cells = np.stack([columns[j] for j in keep], axis=1) if keep else np.empty((len(cells), 0), dtype=str)
        return [header[j] for j in keep], out_cells


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False
