"""Files at rest: AES-256-GCM encrypted inputs and checkpoints, sealed exports.

An encrypted file is

    b"SFAESGCM" | version (1 byte) | 12-byte nonce | ciphertext | 16-byte GCM tag

(the header is authenticated too), made by `python -m scaleflow.crypt encrypt`. Readers recognise it
by its magic bytes and decrypt it in memory (CSV and NPZ into a buffer, TFRecord into TensorFlow's
`ram://` file system): nothing clear is written to disk. GCM authenticates, so a wrong key, a
truncated file or a flipped bit is a DataError naming the file, never garbage training.

The key is 256 bits, given as 64 hex digits or URL-safe base64 (make one with
`python -m scaleflow.crypt keygen`), from an environment variable or a key file named by the config
(`data.encryption.key_env|key_file`, `export.seal_key_env|seal_key_file`), never the config itself.
The `cryptography` package is imported only when a file is encrypted or decrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import secrets
import tarfile
from typing import Any, BinaryIO, Optional

from scaleflow.errors import ConfigError, DataError
from scaleflow.export.integrity import Verification, sha256_file

MAGIC = b"SFAESGCM"
VERSION = 1
HEADER = len(MAGIC) + 1 + 12
TAG = 16
CHECKSUM_SUFFIX = ".sha256"
SEALED_SUFFIX = ".sealed"


# ------------------------------------------------------------------------------------------ keys
def parse_key(text: bytes, where: str) -> bytes:
    """A 256-bit key from 64 hex digits, base64 of 32 bytes, or 32 raw bytes."""
    stripped = text.strip()
    candidates = []
    try:
        candidates.append(bytes.fromhex(stripped.decode()))
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        candidates.append(base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4)))
    except (binascii.Error, ValueError):
        pass
    candidates.append(text)
    for key in candidates:
        if len(key) == 32:
            return key
    raise ValueError(f"{where} does not hold a 256-bit key (64 hex digits or base64 of 32 bytes; "
                     "make one with python -m scaleflow.crypt keygen)")


def load_key(env: Optional[str], path: Optional[str], env_key: str, file_key: str) -> Optional[bytes]:
    """The key in environment variable `env` or file `path` (None when neither is set); ConfigError
    naming the config key (`env_key`/`file_key`) for an unset variable, an unreadable file or a
    malformed key."""
    if env:
        value = os.environ.get(str(env))
        if not value:
            raise ConfigError(env_key, env, "the name of a set, non-empty environment variable holding the key",
                              "Export it before the run (the key itself never goes in the config)")
        try:
            return parse_key(value.encode(), f"${env}")
        except ValueError as e:
            raise ConfigError(env_key, env, "a variable holding a 256-bit key", str(e)) from None
    if path:
        try:
            with open(os.path.expanduser(str(path)), "rb") as f:
                value = f.read()
        except OSError as e:
            raise ConfigError(file_key, path, "a readable key file", e.strerror) from None
        try:
            return parse_key(value, str(path))
        except ValueError as e:
            raise ConfigError(file_key, path, "a file holding a 256-bit key", str(e)) from None
    return None


def new_key() -> str:
    return secrets.token_bytes(32).hex()


# ---------------------------------------------------------------------------------- encrypt/decrypt
def is_encrypted(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def encrypt_bytes(data: bytes, key: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    header = MAGIC + bytes([VERSION]) + nonce
    return header + AESGCM(key).encrypt(nonce, data, header)


def decrypt_bytes(blob: bytes, key: bytes, path: str) -> bytes:
    """The clear bytes of an encrypted file's content; DataError naming `path` when it cannot be."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(MAGIC):
        raise DataError(path, "is not a scaleflow-encrypted file (no SFAESGCM header)",
                        hint="Encrypt it with python -m scaleflow.crypt encrypt, or unset the key")
    if len(blob) < HEADER + TAG:
        raise DataError(path, f"encrypted file is truncated ({len(blob)} bytes: shorter than its header and tag)")
    if blob[len(MAGIC)] != VERSION:
        raise DataError(path, f"encrypted with format version {blob[len(MAGIC)]}; this scaleflow reads {VERSION}")
    header = blob[:HEADER]
    try:
        return AESGCM(key).decrypt(blob[len(MAGIC) + 1:HEADER], blob[HEADER:], header)
    except InvalidTag:
        raise DataError(path, "cannot be decrypted: wrong key, or the file is truncated or was altered "
                        "(AES-GCM authentication failed)",
                        hint="Check data.encryption.key_env / key_file") from None


def encrypt_file(src: str, dst: str, key: bytes) -> None:
    """Write `src` encrypted to `dst` atomically (a half-written file never has the final name)."""
    with open(src, "rb") as f:
        blob = encrypt_bytes(f.read(), key)
    tmp = f"{dst}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, dst)


def decrypt_file(path: str, key: bytes) -> bytes:
    with open(path, "rb") as f:
        return decrypt_bytes(f.read(), key, path)


# -------------------------------------------------------------------------------------- data inputs
_data_key: Optional[bytes] = None


def configure_data(data_cfg: Any) -> Optional[bytes]:
    """Load `data.encryption`'s key for this process's readers (None: no key)."""
    global _data_key
    enc = data_cfg.get("encryption") if hasattr(data_cfg, "get") else None
    _data_key = load_key(enc.get("key_env"), enc.get("key_file"), "data.encryption.key_env",
                                 "data.encryption.key_file") if enc else None
    return _data_key


def open_input(path: str) -> BinaryIO:
    """An input file for reading: decrypted into memory when it is encrypted, else the file itself."""
    if not is_encrypted(path):
        return open(path, "rb")
    if _data_key is None:
        raise DataError(path, "is encrypted (AES-256-GCM) and no key is configured",
                        hint="Set data.encryption.key_env=VAR or data.encryption.key_file=PATH")
    return io.BytesIO(decrypt_file(path, _data_key))


_ram_files: dict[str, str] = {}


def tensorflow_path(path: str) -> str:
    """A path TensorFlow can read: the file, or its decrypted copy in TF's in-memory `ram://` file
    system (made once per process)."""
    if not is_encrypted(path):
        return path
    if path not in _ram_files:
        import tensorflow as tf

        with open_input(path) as f:
            clear = f.read()
        ram = f"ram://scaleflow-decrypted/{hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]}/" \
              f"{os.path.basename(path)}"
        with tf.io.gfile.GFile(ram, "wb") as out:
            out.write(clear)
        _ram_files[path] = ram
    return _ram_files[path]


# ------------------------------------------------------------------------------------------- seal
def seal_export(version_dir: str, key: bytes) -> dict:
    """`<version_dir>.sealed` (an encrypted tar of the export version) and `<version_dir>.sealed.sha256`.
    The tar is built in memory; only the encrypted archive is written."""
    buffer = io.BytesIO()
    name = os.path.basename(os.path.normpath(version_dir))
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(version_dir, arcname=name)
    path = os.path.normpath(version_dir) + SEALED_SUFFIX
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(encrypt_bytes(buffer.getvalue(), key))
    os.replace(tmp, path)
    checksum = sha256_file(path)
    with open(path + CHECKSUM_SUFFIX, "w") as f:
        f.write(f"sha256:{checksum}  {os.path.basename(path)}\n")
    return {"path": path, "checksum": f"sha256:{checksum}"}


def unseal(path: str, key: bytes, dest: str) -> str:
    """Check, decrypt and unpack a sealed export into `dest`; returns the version dir."""
    check = verify_sealed(path)
    if not check.ok:
        raise DataError(path, "; ".join(check.problems))
    clear = decrypt_file(path, key)
    with tarfile.open(fileobj=io.BytesIO(clear), mode="r") as tar:
        tar.extractall(dest, filter="data")
        top = tar.getnames()[0].split("/")[0]
    return os.path.join(dest, top)


def verify_sealed(path: str) -> Verification:
    """A sealed archive against its `<archive>.sha256` (`sha256:<hex>  <name>`)."""
    checksum_file = path + CHECKSUM_SUFFIX
    try:
        with open(checksum_file) as f:
            expected = f.read().split()[0].removeprefix("sha256:")
    except (OSError, IndexError):
        return Verification(path, False, [f"no readable {os.path.basename(checksum_file)} beside it"])
    actual = sha256_file(path)
    if actual != expected:
        return Verification(path, False, [f"changed file {os.path.basename(path)} (sha256 {actual[:12]}..., "
                                          f"expected {expected[:12]}...)"])
    return Verification(path, True, [], {"checksum": "sha256:" + actual})


# ---------------------------------------------------------------------------------------- config
def seal_key(cfg: Any) -> Optional[bytes]:
    export = cfg.export
    key = load_key(export.get("seal_key_env"), export.get("seal_key_file"), "export.seal_key_env",
                   "export.seal_key_file")
    return key if key is not None else configure_data(cfg.data)


def check_config(cfg: Any) -> None:
    """Keys are loaded now (exit 2 on a missing variable or file), before any data is read."""
    key = configure_data(cfg.data)
    if cfg.trainer.get("encrypt_checkpoints") and key is None:
        raise ConfigError("trainer.encrypt_checkpoints", True, "a key in data.encryption.key_env or key_file",
                          "Checkpoints are encrypted with data.encryption's key")
    if cfg.export.get("seal") and seal_key(cfg) is None:
        raise ConfigError("export.seal", True, "a key in export.seal_key_env / seal_key_file (or data.encryption)",
                          "A sealed export is encrypted for transport")


def seal_if_requested(cfg: Any, exported: dict) -> Optional[dict]:
    """export.seal=true: seal the export version just written; returns {path, checksum} or None."""
    if not cfg.export.get("seal") or not exported.get("dir"):
        return None
    from scaleflow.security import audit

    sealed = seal_export(exported["dir"], seal_key(cfg))
    audit.record("export_sealed", path=sealed["path"], checksum=sealed["checksum"],
                 export_checksum=exported.get("checksum"))
    return sealed
