"""mode=models: every run and export under a root with its identity, labels and integrity; two runs
compared key by key; corrupt records skipped with a reason; no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import QUICK, cli
from test_config import PROBE


@pytest.fixture(scope="module")
def root(tf, tmp_path_factory):
    """Two real runs exporting into one model dir, plus a corrupt and a foreign run.json."""
    from scaleflow.cli import compose
    from scaleflow.training.train import run

    base = tmp_path_factory.mktemp("registry")
    models = base / "models"
    for name, lr in (("a", "1e-3"), ("b", "1e-2")):
        run(compose([*QUICK, f"trainer.learning_rate={lr}", f"export.dir={models}", "export.name=clf"]),
            str(base / "outputs" / name))
    (base / "outputs" / "broken").mkdir()
    (base / "outputs" / "broken" / "run.json").write_text("{not json")
    (models / "clf" / "labels.json").write_text(json.dumps({"stable": 1, "canary": 2}))
    return base


def test_lists_every_export_with_identity_labels_and_integrity(root):
    from scaleflow.model_registry import scan

    entries, problems = scan([str(root / "outputs")])
    assert [e.ref for e in entries] == ["clf:1", "clf:2"]
    assert problems and problems[0]["path"].endswith("broken/run.json") and "not valid JSON" in problems[0]["problem"]
    first, second = (e.row() for e in entries)
    assert first["labels"] == ["stable"] and second["labels"] == ["canary"]
    assert first["intact"] is True and first["status"] == "ok" and first["strategy"] == "default"
    assert first["data_fingerprint"] == second["data_fingerprint"]  # same data, different configs
    assert first["config_hash"] != second["config_hash"]
    assert first["export_checksum"].startswith("sha256:") and first["code_version"]
    assert "val_accuracy" in first["metrics"]


def test_a_changed_model_file_is_flagged(root, tmp_path):
    import shutil

    from scaleflow.model_registry import scan

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    version = copy / "models" / "clf" / "2"
    (version / "variables" / "variables.index").write_bytes(b"x")
    # run.json points at the original export dir; rewrite it to point at the copy.
    run_json = copy / "outputs" / "b" / "run.json"
    data = json.loads(run_json.read_text())
    data["export"]["dir"] = str(version)
    run_json.write_text(json.dumps(data))
    entries, _ = scan([str(copy / "outputs")])
    flagged = {e.ref: (e.intact, e.integrity) for e in entries}
    assert flagged["clf:2"][0] is False and "changed file variables/variables.index" in flagged["clf:2"][1]
    assert flagged["clf:1"][0] is True


def test_compare_shows_only_the_keys_that_differ(root):
    from scaleflow.model_registry import compare, find, scan

    entries, _ = scan([str(root / "outputs")])
    result = compare(find(entries, "clf:1"), find(entries, str(root / "outputs" / "b")))
    assert list(result["config"]) == ["trainer.learning_rate"]
    assert result["config"]["trainer.learning_rate"] == [1e-3, 1e-2]
    assert set(result["metrics"]) >= {"loss", "val_loss"}


@pytest.mark.slow
def test_cli_table_json_compare_and_unknown_ref(root, tmp_path):
    outputs = str(root / "outputs")
    table = cli("mode=models", f"registry.root=[{outputs}]", f"hydra.run.dir={tmp_path / 'm'}", cwd=tmp_path,
                check=True)
    assert "clf:1" in table.stdout and "stable" in table.stdout and "skipped" in table.stdout
    as_json = cli("mode=models", f"registry.root=[{outputs}]", "registry.format=json",
                  f"hydra.run.dir={tmp_path / 'j'}", cwd=tmp_path, check=True)
    models = json.loads(as_json.stdout[as_json.stdout.index("{"):])["models"]
    assert [m["version"] for m in models] == [1, 2]
    bad = cli("mode=models", f"registry.root=[{outputs}]", "registry.compare=[clf:1,clf:9]",
              f"hydra.run.dir={tmp_path / 'x'}", cwd=tmp_path)
    assert bad.returncode == 2 and "registry.compare='clf:9'" in bad.stderr and "Traceback" not in bad.stderr
    probe = subprocess.run([sys.executable, "-c", PROBE, "mode=models", f"registry.root=[{outputs}]",
                            f"hydra.run.dir={tmp_path / 'p'}"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert "TENSORFLOW_IMPORTED=False" in probe.stderr, probe.stderr[-2000:]


def test_hundred_runs_are_listed_from_their_files(tmp_path):
    """The registry reads files only: 100 run.json records (no exports) list without error."""
    from scaleflow.model_registry import scan

    for i in range(100):
        run_dir = tmp_path / f"r{i:03d}"
        run_dir.mkdir()
        (run_dir / "run.json").write_text(json.dumps({"status": "ok", "model": {"name": "m", "version": i},
                                                      "metrics": {"final": {"loss": 1.0 / (i + 1)}}}))
    entries, problems = scan([str(tmp_path)])
    assert len(entries) == 100 and not problems
