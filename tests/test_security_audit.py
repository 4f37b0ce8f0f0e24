"""The audit log: who did what, hash-chained, safe under concurrent appends (issue 16, item 5)."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from conftest import cli
from scaleflow.security import audit, auth


def _append_many(path: str, worker: int, n: int) -> None:
    for i in range(n):
        audit.record("test_event", log=path, worker=worker, i=i)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_entries_say_who_when_what_and_secret_fields_are_redacted(tmp_path):
    log = str(tmp_path / "audit.jsonl")
    entry = audit.record("promote", log=log, model="mlp", version=3, api_token="tok-123456")
    assert {"seq", "time", "user", "host", "pid", "event", "prev", "hash"} <= set(entry)
    assert entry["seq"] == 1 and entry["prev"] == audit.GENESIS and entry["api_token"] == "***"
    assert "tok-123456" not in open(log).read()
    assert audit.verify(log).ok


def test_concurrent_appends_from_several_processes_keep_one_intact_chain(tmp_path):
    log = str(tmp_path / "audit.jsonl")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(log, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    check = audit.verify(log)
    assert check.ok and check.entries == 100, check.problem
    assert [e["seq"] for e in lines(log)] == list(range(1, 101))


def test_an_edited_removed_or_inserted_entry_is_named(tmp_path):
    log = tmp_path / "audit.jsonl"
    for i in range(5):
        audit.record("run_start", log=str(log), i=i)
    original = log.read_text().splitlines(keepends=True)

    edited = json.loads(original[2])
    edited["i"] = 99
    log.write_text("".join(original[:2] + [json.dumps(edited) + "\n"] + original[3:]))
    check = audit.verify(str(log))
    assert not check.ok and check.line == 3 and "seq 3" in check.problem and "altered" in check.problem

    log.write_text("".join(original[:1] + original[2:]))  # entry 2 removed
    check = audit.verify(str(log))
    assert not check.ok and check.line == 2 and "entries 2..2 are missing" in check.problem

    forged = json.loads(original[1])
    forged["i"] = 7
    forged["hash"] = audit.entry_hash(forged)  # a consistent rewrite still breaks the next link
    log.write_text("".join(original[:1] + [json.dumps(forged) + "\n"] + original[2:]))
    check = audit.verify(str(log))
    assert not check.ok and check.line == 3 and "does not follow entry 2" in check.problem


@pytest.mark.slow
def test_mode_audit_verifies_the_chain_and_exits_1_naming_the_altered_entry(tmp_path):
    log = tmp_path / "audit.jsonl"
    for i in range(3):
        audit.record("run_start", log=str(log), i=i)
    assert audit.verify(str(log)).ok
    log.write_text(log.read_text().replace('"i": 1', '"i": 5'))
    bad = cli("mode=audit", f"path={log}", f"hydra.run.dir={tmp_path / 'r2'}", "security.audit_log=null")
    assert bad.returncode == 1 and "line 2 (seq 2" in bad.stderr and "Traceback" not in bad.stderr


def test_bearer_tokens_are_stored_hashed_and_checked_by_role(tmp_path):
    tokens_path = tmp_path / "tokens.txt"
    predict = auth.new_token(str(tokens_path), "ci-bot", "predict")
    admin = auth.new_token(str(tokens_path), "alice", "admin")
    assert predict not in tokens_path.read_text() and admin not in tokens_path.read_text()
    tokens, log = auth.TokenFile(str(tokens_path)), str(tmp_path / "audit.jsonl")
    audit.configure(path=log)
    try:
        assert auth.check(f"Bearer {predict}", "predict", tokens=tokens) == auth.Principal("ci-bot", "predict")
        assert auth.check(f"Bearer {admin}", "predict", tokens=tokens).role == "admin"
        with pytest.raises(auth.Unauthorized):
            auth.check(None, "predict", tokens=tokens, client="127.0.0.1")
        with pytest.raises(auth.Unauthorized):
            auth.check("Bearer wrong", "predict", tokens=tokens)
        with pytest.raises(auth.Forbidden):
            auth.check(f"Bearer {predict}", "admin", tokens=tokens)
    finally:
        audit.configure(path=None)
    denied = [e for e in lines(log) if e["event"] == "auth_denied"]
    assert [e["status"] for e in denied] == [401, 401, 403]
    assert predict not in open(log).read() and "wrong" not in open(log).read()
