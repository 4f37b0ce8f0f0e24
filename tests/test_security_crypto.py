"""Encryption at rest: inputs read decrypted in memory, checkpoints and sealed exports encrypted
on disk, and every bad key or file named (issue 16, item 3)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import QUICK, compose
from scaleflow import registry
from scaleflow.errors import ConfigError, DataError
from scaleflow.security import crypto
from scaleflow.security.checkpoints import EncryptedCheckpoints
from test_datasets import N, files, overrides_for  # noqa: F401 - `files` is a fixture

KEY = bytes(range(32))
ENV = {"SF_TEST_DATA_KEY": KEY.hex()}


@pytest.fixture
def data_key(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    yield "data.encryption.key_env=SF_TEST_DATA_KEY"
    crypto._data_key = None


def encrypt_in_place(*paths):
    for path in paths:
        crypto.encrypt_file(str(path), str(path), KEY)


def test_wrong_key_truncated_or_unencrypted_files_are_data_errors_naming_the_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(crypto.encrypt_bytes(b"a,b\n1,2\n", KEY))
    assert crypto.decrypt_file(str(path), KEY) == b"a,b\n1,2\n"
    with pytest.raises(DataError, match="wrong key") as e:
        crypto.decrypt_file(str(path), bytes(32))
    assert str(path) in str(e.value)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated or was altered"):
        crypto.decrypt_file(str(path), KEY)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="truncated"):
        crypto.decrypt_file(str(path), KEY)


@pytest.mark.parametrize("kind", ["csv", "npz", "tfrecord"])
def test_encrypted_inputs_read_exactly_as_clear_ones(files, kind, data_key):  # noqa: F811
    root, x, _ = files
    clear = compose(*overrides_for(kind, root))
    dataset = registry.get("dataset", kind)()
    expected = np.stack([f.numpy() for f, _ in dataset.read(clear.data)])
    encrypt_in_place(*(p for p in glob.glob(f"{root}/**", recursive=True)
                       if os.path.isfile(p) and p.endswith((".csv", ".npz", ".tfrecord"))))
    from scaleflow.data.base import InMemoryDataset

    InMemoryDataset._cache.clear()  # arrays are cached per config within a process
    with pytest.raises(DataError, match="no key is configured"):
        crypto._data_key = None
        registry.get("dataset", kind)().describe(clear.data)
    cfg = compose(*overrides_for(kind, root), data_key)
    info = registry.get("dataset", kind)().describe(cfg.data)
    got = np.stack([f.numpy() for f, _ in registry.get("dataset", kind)().read(cfg.data)])
    assert info.num_examples == N
    np.testing.assert_array_equal(got, expected)


def test_missing_or_malformed_keys_are_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        compose("data.encryption.key_env=SF_TEST_UNSET_KEY")
    assert e.value.key == "data.encryption.key_env"
    (tmp_path / "short.key").write_text("abcd")
    with pytest.raises(ConfigError) as e:
        compose(f"data.encryption.key_file={tmp_path / 'short.key'}")
    assert e.value.key == "data.encryption.key_file" and "256-bit" in str(e.value)
    with pytest.raises(ConfigError) as e:
        compose("trainer.encrypt_checkpoints=true")
    assert e.value.key == "trainer.encrypt_checkpoints"
    with pytest.raises(ConfigError) as e:
        compose("export.seal=true")
    assert e.value.key == "export.seal"


def test_checkpoints_are_ciphertext_on_disk_and_come_back_on_resume(tmp_path):
    backup = tmp_path / "backup" / "worker-0"
    store = EncryptedCheckpoints(str(backup), KEY, resume=True)
    os.makedirs(os.path.join(store.clear_dir, "latest"))
    open(os.path.join(store.clear_dir, "latest", "weights.h5"), "wb").write(b"WEIGHTS" * 100)
    open(os.path.join(store.clear_dir, "training_metadata.json"), "w").write('{"epoch": 2}')
    store.sync()
    store.close()
    on_disk = sorted(os.path.relpath(p, backup) for p in glob.glob(f"{backup}/**/*", recursive=True) if os.path.isfile(p))
    assert on_disk == ["latest/weights.h5.sfenc", "training_metadata.json.sfenc"]
    assert all(crypto.is_encrypted(str(backup / p)) for p in on_disk)
    assert not os.path.exists(store.clear_dir)
    resumed = EncryptedCheckpoints(str(backup), KEY, resume=True)
    assert open(os.path.join(resumed.clear_dir, "training_metadata.json")).read() == '{"epoch": 2}'
    resumed.close()


def test_encrypted_csv_trains_with_encrypted_checkpoints_and_a_sealed_export(files, train, tmp_path, data_key):  # noqa: F811
    root, _, _ = files
    encrypt_in_place(root / "iris.csv")
    run = train(*overrides_for("csv", root), data_key, "trainer.epochs=2", "model.hidden_units=[8]",
                "trainer.encrypt_checkpoints=true", "export.seal=true", "security.audit_log=null",
                run_dir=tmp_path / "run")
    assert run["status"] == "ok" and run["data"]["num_examples"] == N
    sealed = run["export"]["sealed"]
    assert crypto.is_encrypted(sealed["path"]) and os.path.exists(sealed["path"] + ".sha256")
    from scaleflow.export.seal import unseal
    from scaleflow.modes.verify import verify_path

    assert verify_path(sealed["path"])[0].ok
    version = unseal(sealed["path"], KEY, str(tmp_path / "unsealed"))
    assert verify_path(version)[0].ok
    open(sealed["path"], "ab").write(b"x")
    assert not verify_path(sealed["path"])[0].ok


@pytest.mark.slow
def test_crypt_cli_round_trip_and_one_line_errors(tmp_path):
    def crypt(*args, env=None):
        return subprocess.run([sys.executable, "-m", "scaleflow.crypt", *args], capture_output=True, text=True,
                              env={**os.environ, **(env or {})})

    key = crypt("keygen").stdout.strip()
    (tmp_path / "k").write_text(key)
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    assert crypt("encrypt", "--key-file", str(tmp_path / "k"), str(tmp_path / "d.csv")).returncode == 0
    assert crypto.is_encrypted(str(tmp_path / "d.csv.enc"))
    out = crypt("decrypt", "--key-env", "K", str(tmp_path / "d.csv.enc"), "-o", "-", env={"K": key})
    assert out.stdout == "a,b\n1,2\n"
    wrong = crypt("decrypt", "--key-env", "K", str(tmp_path / "d.csv.enc"), "-o", "-", env={"K": "0" * 64})
    assert wrong.returncode == 2 and "d.csv.enc" in wrong.stderr and "wrong key" in wrong.stderr
    assert "Traceback" not in wrong.stderr and wrong.stdout == ""
    missing = crypt("encrypt", "--key-env", "NOPE_UNSET", str(tmp_path / "d.csv"))
    assert missing.returncode == 2 and "NOPE_UNSET" in missing.stderr
