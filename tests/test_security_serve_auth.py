"""The server's bearer tokens and the audit trail of label moves (issue 16, item 5)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from scaleflow.security import audit, auth


def test_server_requests_need_a_token_with_the_role_and_refusals_are_audited_without_payload(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from scaleflow.serving.app import RequestHooks, request_hooks

    tokens = tmp_path / "tokens.txt"
    predict = auth.new_token(str(tokens), "ci", "predict")
    admin = auth.new_token(str(tokens), "ops", "admin")
    settings = SimpleNamespace(max_body_bytes=1 << 20, auth_token_file=str(tokens))
    app = FastAPI()
    app.add_api_route("/v1/models/m:predict", lambda: {"predictions": [1]}, methods=["POST"])
    app.add_api_route("/v2/repository/models/m/load", lambda: {"loaded": True}, methods=["POST"])
    app.add_api_route("/v2/health/ready", lambda: {"ready": True}, methods=["GET"])
    app.add_middleware(RequestHooks, settings=settings, hooks=request_hooks(settings))
    client = TestClient(app)
    log = tmp_path / "audit.jsonl"
    audit.configure(path=str(log))
    try:
        body = {"instances": [["PAYLOAD-SECRET-123"]]}
        no_token = client.post("/v1/models/m:predict", json=body)
        assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/models/m:predict", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/v1/models/m:predict", json=body, headers={"Authorization": f"Bearer {predict}"}).status_code == 200
        assert client.post("/v2/repository/models/m/load", headers={"Authorization": f"Bearer {predict}"}).status_code == 403
        assert client.post("/v2/repository/models/m/load", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200  # probes need no token
    finally:
        audit.configure(path=None)
    text = log.read_text()
    assert [json.loads(line)["status"] for line in text.splitlines()] == [401, 401, 403]
    assert "PAYLOAD-SECRET-123" not in text and predict not in text and "nope" not in text


def test_a_bad_token_file_stops_mode_serve_before_it_starts(tmp_path):
    from scaleflow.errors import ConfigError

    (tmp_path / "tokens.txt").write_text("alice admin 1234\n")
    with pytest.raises(ConfigError) as e:
        auth.TokenFile(str(tmp_path / "tokens.txt"))
    assert e.value.key == "serve.auth_token_file" and "Line 1" in str(e.value)


def test_label_moves_promotion_and_rollback_are_audited(tmp_path):
    from scaleflow.deploy import labels

    log = tmp_path / "audit.jsonl"
    audit.configure(path=str(log))
    try:
        root = str(tmp_path / "mlp")
        labels.move(root, {"stable": 1}, action="promote", reason="first")
        labels.move(root, {"stable": 2}, action="promote", reason="better")
        labels.rollback(root)
    finally:
        audit.configure(path=None)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e["label"], e["from"], e["to"]) for e in events] == \
        [("promote", "stable", None, 1), ("promote", "stable", 1, 2), ("rollback", "stable", 2, 1)]
    assert audit.verify(str(log)).ok
