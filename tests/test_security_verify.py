"""mode=verify names what changed in an export since training wrote it (issue 16, item 4)."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import cli
from scaleflow.export.integrity import write_manifest
from scaleflow.modes.verify import verify_path


def fake_export(root, version: int) -> str:
    """An export version dir as the exporters leave it: files + scaleflow_export.json."""
    directory = root / "mlp" / str(version)
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"graph" * 100)
    (directory / "variables" / "variables.data").write_bytes(b"weights" * 100)
    write_manifest(str(directory), "saved_model", {"name": "mlp", "version": version})
    return str(directory)


def test_an_untouched_export_verifies_and_each_kind_of_change_is_named(tmp_path):
    v1, v2 = fake_export(tmp_path, 1), fake_export(tmp_path, 2)
    assert [r.ok for r in verify_path(str(tmp_path / "mlp"))] == [True, True]
    (tmp_path / "mlp" / "2" / "variables" / "variables.data").write_bytes(b"poisoned")
    (tmp_path / "mlp" / "2" / "extra.py").write_text("import os")
    (tmp_path / "mlp" / "2" / "saved_model.pb").unlink()
    first, second = verify_path(str(tmp_path / "mlp"))
    assert first.ok and not second.ok
    assert second.problems == ["missing file saved_model.pb", "unexpected file extra.py",
                               second.problems[2]]
    assert second.problems[2].startswith("changed file variables/variables.data")
    (tmp_path / "run.json").write_text('{"export": {"dir": "%s"}}' % os.path.abspath(v2))
    assert [r.path for r in verify_path(str(tmp_path))] == [v1, v2]  # a run dir: every export under it, once


@pytest.mark.slow
def test_mode_verify_exits_1_naming_the_changed_file_and_2_for_nothing_to_verify(tmp_path):
    fake_export(tmp_path, 1)
    (tmp_path / "mlp" / "1" / "saved_model.pb").write_bytes(b"tampered")
    bad = cli("mode=verify", f"path={tmp_path / 'mlp'}", f"hydra.run.dir={tmp_path / 'r2'}")
    assert bad.returncode == 1 and "changed file saved_model.pb" in bad.stdout, bad.stderr
    missing = cli("mode=verify", f"path={tmp_path / 'nothing'}", f"hydra.run.dir={tmp_path / 'r3'}")
    assert missing.returncode == 2 and "path=" in missing.stderr


def test_mode_verify_imports_no_tensorflow(tmp_path):
    import subprocess

    version = fake_export(tmp_path, 1)
    code = ("import sys; from scaleflow.modes.verify import verify_path; "
            f"assert verify_path({version!r})[0].ok; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
