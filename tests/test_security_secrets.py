"""Secrets given to a run are used by it and found in no file it writes (issue 16, item 2)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from conftest import cli
from scaleflow.security import redact

URL_PASSWORD, URL_TOKEN, ENV_SECRET = "PWplanted4821", "TOKplanted9034", "ENVplanted7716"


def files_containing(root: Path, *needles: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return hits


@pytest.fixture(autouse=True)
def _forget():
    yield
    redact.forget()


def test_secret_like_keys_are_recognised_but_references_to_secrets_are_not():
    for key in ("password", "db_password", "api_key", "apiKey", "token", "auth_token", "aws_secret_access_key",
                "client_secret", "credentials", "private_key"):
        assert redact.is_secret_key(key), key
    for key in ("shard_key", "key_file", "key_env", "auth_token_file", "secret_keys", "name", "path", "monkey"):
        assert not redact.is_secret_key(key), key
    assert redact.is_secret_key("dsn", extra=["dsn"])  # security.secret_keys extends the list


def test_url_credentials_and_query_tokens_are_redacted_other_parts_kept():
    url = "s3://AKIA:wJalr@bucket/data.csv?X-Amz-Signature=abcd1234&part=2&token=zz99"
    assert redact.redact_text(f"reading {url} now") == \
        "reading s3://***@bucket/data.csv?X-Amz-Signature=***&part=2&token=*** now"


def test_recorded_config_redacts_env_values_secret_keys_and_urls_but_the_run_sees_them(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setenv("SF_TEST_ENV_SECRET", ENV_SECRET)
    cfg = OmegaConf.create({"data": {"path": f"https://u:{URL_PASSWORD}@h/x.csv?token={URL_TOKEN}"},
                            "db": {"password": "hunter2", "host": "db.local", "dsn": "postgres-thing"},
                            "hardware": {"tpu": "${oc.env:SF_TEST_ENV_SECRET}"},
                            "security": {"secret_keys": ["dsn"]}})
    recorded = redact.recorded_config(cfg)
    assert recorded["db"] == {"password": "***", "host": "db.local", "dsn": "***"}
    assert recorded["hardware"]["tpu"] == "***"
    assert recorded["data"]["path"] == "https://***@h/x.csv?token=***"
    assert cfg.hardware.tpu == ENV_SECRET and URL_TOKEN in cfg.data.path  # the run keeps real values


def test_log_lines_and_tracebacks_quoting_a_secret_are_redacted(monkeypatch, caplog):
    from omegaconf import OmegaConf

    monkeypatch.setenv("SF_TEST_ENV_SECRET", ENV_SECRET)
    redact.protect(OmegaConf.create({"hardware": {"tpu": "${oc.env:SF_TEST_ENV_SECRET}"}}))
    log = logging.getLogger("scaleflow.test")
    with caplog.at_level(logging.INFO, logger="scaleflow.test"):
        log.info("connecting with %s", ENV_SECRET)
        try:
            raise OSError(f"cannot open https://h/x?token={URL_TOKEN}")
        except OSError:
            log.exception("failed")
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert ENV_SECRET not in text and URL_TOKEN not in text and "***" in text


@pytest.mark.slow
def test_planted_secrets_are_in_no_file_of_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    url = f"https://bob:{URL_PASSWORD}@example.com/data.csv?token={URL_TOKEN}&part=1"
    result = cli("data.num_examples=128", "trainer.epochs=1", "model.hidden_units=[4]", f"data.path='{url}'",
                 "hardware.tpu=${oc.env:SF_TEST_ENV_SECRET}", f"hydra.run.dir={run_dir}",
                 "security.audit_log=null", env={"SF_TEST_ENV_SECRET": ENV_SECRET})
    assert result.returncode == 0, result.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").exists() and (run_dir / "run.json").exists()
    assert files_containing(run_dir, URL_PASSWORD, URL_TOKEN, ENV_SECRET) == []
    assert "https://***@example.com/data.csv?token=***&part=1" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert URL_TOKEN not in result.stdout + result.stderr


@pytest.mark.slow
def test_planted_secrets_are_in_no_file_of_a_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    urls = ",".join(f"'https://h/{i}.csv?sig={URL_TOKEN}{i}'" for i in range(2))
    result = cli("-m", "mode=plan", f"data.path={urls}", f"hydra.sweep.dir={sweep_dir}", "security.audit_log=null")
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "multirun.yaml").exists() and list(sweep_dir.glob("summary.*"))
    assert files_containing(sweep_dir, URL_TOKEN) == []
