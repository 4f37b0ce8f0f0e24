"""labels.json: stable/canary pointers, written atomically, with a history that rollback replays."""

import json
import multiprocessing
import os

import pytest

from scaleflow.deploy import labels


def test_no_file_means_no_labels(tmp_path):
    assert labels.read_labels(str(tmp_path)) == {}


def test_move_writes_the_label_keys_readers_rely_on(tmp_path):
    root = str(tmp_path)
    labels.move(root, {"stable": 1}, action="promote", reason="first")
    labels.move(root, {"canary": 2}, action="canary", reason="worse")
    data = json.loads(open(os.path.join(root, "labels.json")).read())
    assert (data["stable"], data["canary"]) == (1, 2)
    assert [(h["label"], h["from"], h["to"], h["action"]) for h in data["history"]] == [
        ("stable", None, 1, "promote"), ("canary", None, 2, "canary")]
    assert labels.read_labels(root) == {"stable": 1, "canary": 2}


def test_rollback_walks_back_through_earlier_stables(tmp_path):
    root = str(tmp_path)
    for version in (1, 2, 3):
        labels.move(root, {"stable": version}, action="promote")
    assert labels.rollback(root) == (3, 2)
    assert labels.rollback(root) == (2, 1)
    with pytest.raises(labels.LabelsError, match="no earlier stable"):
        labels.rollback(root)
    labels.move(root, {"stable": 4}, action="promote")
    assert labels.rollback(root) == (4, 1)


def test_rollback_skips_an_unusable_version_and_says_why(tmp_path):
    root = str(tmp_path)
    for version in (1, 2, 3):
        labels.move(root, {"stable": version}, action="promote")
    assert labels.rollback(root, usable=lambda v: "tampered" if v == 2 else None) == (3, 1)
    assert "skipped 2 (tampered)" in labels.read_state(root)["history"][-1]["reason"]


def test_a_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "labels.json").write_text('{"stable": "three"}')
    with pytest.raises(labels.LabelsError, match="stable='three' is not a version number"):
        labels.read_labels(str(tmp_path))
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(labels.LabelsError, match="unreadable"):
        labels.read_labels(str(tmp_path))


def _move_many(root, label, start):
    for version in range(start, start + 20):
        labels.move(root, {label: version}, action="set")


def test_concurrent_writers_lose_no_move(tmp_path):
    root = str(tmp_path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_move_many, args=(root, label, start))
             for label, start in (("stable", 1), ("canary", 100))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    history = labels.read_state(root)["history"]
    assert len(history) == 40
    assert labels.read_labels(root) == {"stable": 20, "canary": 119}
