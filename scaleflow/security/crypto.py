"""Files at rest: AES-256-GCM encrypted inputs and checkpoints (sealed exports: export/seal.py).

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
from typing import Any, BinaryIO, Optional

from scaleflow.errors import ConfigError, DataError

MAGIC = b"SFAESGCM"
VERSION = 1
HEADER = len(MAGIC) + 1 + 12
TAG = 16


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


# ---------------------------------------------------------------------------------------- config
def check_config(cfg: Any) -> None:
    """Keys are loaded now (exit 2 on a missing variable or file), before any data is read. (The
    sealed export's key: export/seal.py.)"""
    key = configure_data(cfg.data)
    if cfg.trainer.get("encrypt_checkpoints") and key is None:
        raise ConfigError("trainer.encrypt_checkpoints", True, "a key in data.encryption.key_env or key_file",
                          "Checkpoints are encrypted with data.encryption's key")
