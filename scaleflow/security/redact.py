"""Secrets never reach an artifact: run.json, `.hydra/*.yaml`, `multirun.yaml`, logs, sweep summaries.

A value is secret when
  - it comes from the environment (`${oc.env:NAME}`): the resolved value is replaced, the
    interpolation text itself (which names only the variable) is kept;
  - its key looks secret-like: a name part is one of SECRET_WORDS (password, token, secret, key,
    credential, ...) or listed in `security.secret_keys`; keys that only *refer* to a secret
    (`key_file`, `key_env`, `auth_token_file`, `secret_keys`) and scaleflow's `shard_key` are not;
  - it is the credential part of a URL (`https://user:pass@host`) or a query parameter with a
    secret-like name (`?token=`, `&sig=`, `X-Amz-Signature=`, ...).
It becomes `***`. The run itself keeps the real values: redaction applies only to what is written.

Secret strings found in a config are also remembered for this process, so that a log line or an
error message that quotes one (e.g. a failed open of a signed URL) is redacted too: `install()`
wraps the logging record factory, which survives Hydra's logging reconfiguration.

Example:
    >>> redact_text("read https://u:pw@host/x.csv?token=abc123&part=2")
    'read https://***@host/x.csv?token=***&part=2'
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterable

MASK = "***"
SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "passphrase", "token", "secret", "key", "apikey", "credential",
    "credentials", "auth", "authorization", "signature", "sig", "cookie", "privatekey", "accesskey",
})
# A key ending in one of these names where a secret is, not the secret itself.
REFERENCE_SUFFIXES = ("file", "env", "path", "dir", "keys", "name", "names", "column", "columns")
NOT_SECRET_KEYS = frozenset({"shard_key", "x_key", "y_key"})  # data keys: the name of an array
# Query parameters of signed URLs (S3, GCS, Azure SAS) that carry the credential.
SECRET_QUERY = frozenset({"sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
                          "x-goog-signature", "x-goog-credential", "access_token", "code"})
MIN_TEXT_SECRET = 4  # shorter strings are redacted only where their key says so (too common as text)

_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s'\"<>,]+")
_USERINFO = re.compile(r"^([a-zA-Z][\w+.-]*://)([^/@?#]+)@")
_QUERY = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")
_ENV = re.compile(r"\$\{oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")

_extra_words: set[str] = set()
_secrets: set[str] = set()


def _parts(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))  # camelCase -> camel_Case
    return [p for p in re.split(r"[^a-zA-Z0-9]+", name.lower()) if p]


def is_secret_key(name: Any, extra: Iterable[str] = ()) -> bool:
    """Whether a config key / env variable / query parameter name denotes a secret value."""
    if not isinstance(name, str) or not name:
        return False
    lowered = name.lower()
    extra = {e.lower() for e in extra} | _extra_words
    if lowered in extra:
        return True
    if lowered in NOT_SECRET_KEYS:
        return False
    parts = _parts(name)
    if not parts or parts[-1] in REFERENCE_SUFFIXES:
        return False
    joined = "".join(parts)
    return any(p in SECRET_WORDS or p in extra for p in parts) or joined in SECRET_WORDS


def _redact_url(match: re.Match) -> str:
    url = match.group(0)
    url = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", url)

    def query(m: re.Match) -> str:
        name = m.group(2)
        if m.group(3) and (name.lower() in SECRET_QUERY or is_secret_key(name)):
            return f"{m.group(1)}{name}={MASK}"
        return m.group(0)

    return _QUERY.sub(query, url)


def redact_text(text: str) -> str:
    """`text` with URL credentials, secret query values and every remembered secret replaced."""
    if not isinstance(text, str) or not text:
        return text
    if "://" in text:
        text = _URL.sub(_redact_url, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def url_secrets(text: str) -> set[str]:
    """The credential and token substrings of the URLs in `text`."""
    found: set[str] = set()
    for url in _URL.findall(text or ""):
        m = _USERINFO.match(url)
        if m:
            userinfo = m.group(2)
            found.update(p for p in userinfo.split(":", 1)[1:] or [userinfo] if p)
        for _, name, value in _QUERY.findall(url):
            if value and (name.lower() in SECRET_QUERY or is_secret_key(name)):
                found.add(value)
    return found


def remember(values: Iterable[Any]) -> None:
    """Treat these strings as secrets wherever they appear in text from now on (this process)."""
    for value in values:
        if value is not None and not isinstance(value, (dict, list, bool)):
            text = str(value)
            if len(text) >= MIN_TEXT_SECRET and text != MASK:
                _secrets.add(text)


def forget() -> None:
    """Drop remembered secrets (tests)."""
    _secrets.clear()
    _extra_words.clear()


def env_names(raw: Any) -> set[str]:
    """Environment variables a raw (unresolved) config value interpolates with `${oc.env:NAME}`."""
    return set(_ENV.findall(raw)) if isinstance(raw, str) else set()


def redact_tree(value: Any, raw: Any = None, extra: Iterable[str] = (), key: Any = None) -> Any:
    """A copy of a config tree (dicts/lists of plain values) with every secret replaced.

    Args:
        value: the tree as written (resolved, or raw for Hydra's own files).
        raw: the same tree unresolved, to find `${oc.env:...}` values (None: `value` is raw).
        extra: more secret key names (`security.secret_keys`).
        key: the key `value` sits under.
    """
    if isinstance(value, dict):
        raw_d = raw if isinstance(raw, dict) else {}
        return {k: redact_tree(v, raw_d.get(k), extra, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        raw_l = raw if isinstance(raw, (list, tuple)) and len(raw) == len(value) else [None] * len(value)
        return [redact_tree(v, r, extra, key) for v, r in zip(value, raw_l)]
    if value is None or isinstance(value, bool):
        return value
    if is_secret_key(key, extra) and value != "":
        return MASK if not (isinstance(value, str) and value.startswith("${")) else value
    if isinstance(value, str):
        text = value
        for name in env_names(raw):
            env_value = os.environ.get(name)
            if env_value:
                text = text.replace(env_value, MASK)
        return redact_override(text, extra) if _looks_like_override(text) else redact_text(text)
    return value


def _looks_like_override(text: str) -> bool:
    head = text.split("=", 1)[0]
    return "=" in text and bool(re.fullmatch(r"[+~]{0,2}[\w.@/-]+", head))


def redact_override(override: str, extra: Iterable[str] = ()) -> str:
    """`key=value` with the value replaced when the key is secret-like (`+db.password=x` -> `***`)."""
    head, sep, value = override.partition("=")
    if sep and value and is_secret_key(head.lstrip("+~").rsplit(".", 1)[-1], extra):
        return f"{head}={MASK}"
    return redact_text(override)


def secrets_of(resolved: Any, raw: Any = None, extra: Iterable[str] = (), key: Any = None) -> set[str]:
    """Every secret string in a config tree (for `remember`)."""
    found: set[str] = set()
    if isinstance(resolved, dict):
        raw_d = raw if isinstance(raw, dict) else {}
        for k, v in resolved.items():
            found |= secrets_of(v, raw_d.get(k), extra, k)
        return found
    if isinstance(resolved, (list, tuple)):
        raw_l = raw if isinstance(raw, (list, tuple)) and len(raw) == len(resolved) else [None] * len(resolved)
        for v, r in zip(resolved, raw_l):
            found |= secrets_of(v, r, extra, key)
        return found
    if resolved is None or isinstance(resolved, bool):
        return found
    if is_secret_key(key, extra):
        found.add(str(resolved))
    for name in env_names(raw):
        if os.environ.get(name):
            found.add(os.environ[name])
    if isinstance(resolved, str):
        found |= url_secrets(resolved)
        if "=" in resolved:  # an override string `key=value`
            head, _, value = resolved.partition("=")
            if value and is_secret_key(head.lstrip("+~").rsplit(".", 1)[-1], extra):
                found.add(value)
    return found


def scrub(value: Any) -> Any:
    """`value` (JSON-like) with `redact_text` applied to every string: for artifacts other than the
    config (run.json's error and resume command, shards.json, ...). Unchanged objects are returned
    as they are, so the common case costs one walk."""
    if not _secrets and not isinstance(value, (dict, list, tuple, str)):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {scrub(k) if isinstance(k, str) else k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


# ------------------------------------------------------------------------------------- configs
def secret_keys(cfg: Any) -> list[str]:
    """`security.secret_keys` of a config (DictConfig or dict), [] when absent."""
    security = (cfg.get("security") if hasattr(cfg, "get") else None) or {}
    keys = security.get("secret_keys") if hasattr(security, "get") else None
    return [str(k) for k in (keys or [])]


def _containers(cfg: Any) -> tuple[Any, Any]:
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return cfg, cfg
    raw = OmegaConf.to_container(cfg, resolve=False)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - a config that does not resolve is recorded unresolved
        resolved = raw
    return resolved, raw


def protect(cfg: Any) -> None:
    """Remember `cfg`'s secrets for this process and redact every log record from now on."""
    extra = secret_keys(cfg)
    _extra_words.update(e.lower() for e in extra)
    resolved, raw = _containers(cfg)
    remember(secrets_of(resolved, raw, extra))
    install()


def recorded_config(cfg: Any) -> dict:
    """The resolved config as run.json records it: secrets replaced (and remembered for the logs)."""
    protect(cfg)
    resolved, raw = _containers(cfg)
    return redact_tree(resolved, raw, secret_keys(cfg))


# ------------------------------------------------------------------------------------- files
def redact_yaml_file(path: str, extra: Iterable[str] = ()) -> bool:
    """Rewrite a YAML file Hydra wrote (`config.yaml`, `hydra.yaml`, `overrides.yaml`,
    `multirun.yaml`) with its secrets replaced; True when it changed. Atomic: never half-written."""
    import yaml

    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return False
    data = yaml.safe_load(text)
    clean = redact_tree(data, None, extra)
    if clean == data:
        return False
    tmp = f"{path}.redact.tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(clean, f, default_flow_style=False, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
    return True


def protect_hydra_outputs(task_cfg: Any, hydra_cfg: Any) -> None:
    """Called first thing in every job: remember the job's secrets, then redact what Hydra wrote
    before the job started (`<run_dir>/.hydra/*.yaml`, a sweep's `multirun.yaml`)."""
    from omegaconf import OmegaConf

    protect(task_cfg)
    extra = secret_keys(task_cfg)
    hydra_container = OmegaConf.to_container(hydra_cfg, resolve=False)
    remember(secrets_of(hydra_container, None, extra))
    remember(secrets_of(list(hydra_cfg.overrides.task), None, extra))
    run_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.output_subdir is not None:
        directory = os.path.join(run_dir, str(hydra_cfg.output_subdir))
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            redact_yaml_file(os.path.join(directory, name), extra)
    if hydra_cfg.mode is not None and str(hydra_cfg.mode.name) == "MULTIRUN":
        redact_yaml_file(os.path.join(str(hydra_cfg.sweep.dir), "multirun.yaml"), extra)


# ------------------------------------------------------------------------------------- logging
_installed = False


def install() -> None:
    """Redact every log record's message (and traceback) from now on, in this process."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not _secrets and not _extra_words:
            return record
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left to logging's own handling
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
