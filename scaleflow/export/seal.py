"""export.seal=true: `<version>.sealed`, an AES-256-GCM encrypted tar of the export version (the
format of security/crypto.py), and `<version>.sealed.sha256`, for transport. `mode=verify` checks
the archive against its checksum; `python -m scaleflow.crypt unseal` checks, decrypts and unpacks it.
The key comes from `export.seal_key_env|seal_key_file`, else `data.encryption`'s.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import Any, Optional

from scaleflow.errors import ConfigError, DataError
from scaleflow.export.integrity import Verification, sha256_file
from scaleflow.security.crypto import configure_data, decrypt_file, encrypt_bytes, load_key

CHECKSUM_SUFFIX = ".sha256"
SEALED_SUFFIX = ".sealed"


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


def seal_key(cfg: Any) -> Optional[bytes]:
    export = cfg.export
    key = load_key(export.get("seal_key_env"), export.get("seal_key_file"), "export.seal_key_env",
                   "export.seal_key_file")
    return key if key is not None else configure_data(cfg.data)


def check_config(cfg: Any) -> None:
    """The sealing key is loaded now (exit 2 on a missing variable or file), before training."""
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
