"""Encrypted resume checkpoints (`trainer.encrypt_checkpoints=true`).

Keras' BackupAndRestore reads and writes plain files, so it is given a directory in RAM
(`/dev/shm`): at start the encrypted files of `backup/worker-<i>/` are decrypted into it (a resume),
and after every epoch's save each checkpoint file is encrypted back into `backup/worker-<i>/` as
`<name>.sfenc` (AES-256-GCM with data.encryption's key, written atomically). The disk only ever holds
ciphertext; the RAM copy is removed when the run ends (and, after a kill, by the next run of the
same run dir).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import tempfile
from typing import Any, Optional

from scaleflow.security import crypto

log = logging.getLogger("scaleflow")
SUFFIX = ".sfenc"
RAM = "/dev/shm"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class EncryptedCheckpoints:
    """The clear working copy (`clear_dir`, in RAM) of an encrypted backup dir."""

    def __init__(self, backup_dir: str, key: bytes, resume: bool):
        self.backup_dir, self.key = backup_dir, key
        tag = hashlib.sha256(os.path.abspath(backup_dir).encode()).hexdigest()[:12]
        root = RAM if os.path.isdir(RAM) and os.access(RAM, os.W_OK) else None
        if root is None:
            log.warning("trainer.encrypt_checkpoints: no %s here; the clear working copy of the checkpoint "
                        "goes to the system temp dir", RAM)
        for stale in glob.glob(os.path.join(root or tempfile.gettempdir(), f"scaleflow-ckpt-{tag}-*")):
            if not _alive(int(stale.rsplit("-", 1)[1])):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
        self.clear_dir = os.path.join(root or tempfile.gettempdir(), f"scaleflow-ckpt-{tag}-{os.getpid()}")
        shutil.rmtree(self.clear_dir, ignore_errors=True)
        os.makedirs(self.clear_dir, mode=0o700)
        if not resume:
            shutil.rmtree(backup_dir, ignore_errors=True)
        for path in glob.glob(os.path.join(backup_dir, "**", "*" + SUFFIX), recursive=True):
            rel = os.path.relpath(path, backup_dir)[: -len(SUFFIX)]
            target = os.path.join(self.clear_dir, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(crypto.decrypt_file(path, key))

    def sync(self) -> None:
        """Encrypt the working copy into the backup dir; drop encrypted files Keras deleted."""
        os.makedirs(self.backup_dir, exist_ok=True)
        present = set()
        for root, _, files in os.walk(self.clear_dir):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), self.clear_dir)
                target = os.path.join(self.backup_dir, rel + SUFFIX)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                crypto.encrypt_file(os.path.join(root, name), target, self.key)
                present.add(os.path.abspath(target))
        for path in glob.glob(os.path.join(self.backup_dir, "**", "*" + SUFFIX), recursive=True):
            if os.path.abspath(path) not in present:
                os.unlink(path)

    def callback(self) -> Any:
        import keras

        outer = self

        class EncryptAfterSave(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.sync()

        return EncryptAfterSave()

    def close(self) -> None:
        shutil.rmtree(self.clear_dir, ignore_errors=True)


def prepare(backup_dir: str, cfg: Any) -> tuple[str, Optional[EncryptedCheckpoints]]:
    """(the dir BackupAndRestore should use, the encrypted store or None)."""
    if not cfg.trainer.get("encrypt_checkpoints"):
        return backup_dir, None
    store = EncryptedCheckpoints(backup_dir, crypto.configure_data(cfg.data), bool(cfg.trainer.resume))
    return store.clear_dir, store
