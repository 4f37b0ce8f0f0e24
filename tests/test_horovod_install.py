"""strategy=horovod without a usable Horovod, and its config rules: no Horovod build needed.

A missing Horovod is simulated for real in a subprocess: a `sitecustomize` on PYTHONPATH makes
`import horovod` fail exactly as on a machine without it; a Horovod built for another TensorFlow is
a shadow `horovod` package whose build metadata names another version.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from conftest import cli, compose
from scaleflow.errors import ConfigError

# The plugin package (not Horovod) is needed: `pip install -e plugins/scaleflow_horovod` or `make horovod`.
if importlib.util.find_spec("scaleflow_horovod") is None:
    if os.environ.get("SCALEFLOW_REQUIRE_HOROVOD") == "1":
        raise RuntimeError("SCALEFLOW_REQUIRE_HOROVOD=1 but the scaleflow-horovod plugin is not installed")
    pytest.skip("the scaleflow-horovod plugin is not installed (pip install -e plugins/scaleflow_horovod)",
                allow_module_level=True)

BLOCK_HOROVOD = '''
import importlib.abc, sys

class _NoHorovod(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "horovod" or name.startswith("horovod."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoHorovod())
'''


def _env_with(path) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}


def test_missing_horovod_ends_with_the_install_command(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text(BLOCK_HOROVOD)
    for workers in ("1", "2"):
        result = cli("strategy=horovod", f"strategy.num_workers={workers}", f"hydra.run.dir={tmp_path / workers}",
                     cwd=tmp_path, env=_env_with(shadow), timeout=120)
        assert result.returncode == 1, result.stderr
        assert "Horovod is not installed" in result.stderr
        assert "build_horovod.sh" in result.stderr and "make horovod" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / workers / "run.json").exists()  # nothing started


def test_horovod_built_for_another_tensorflow_ends_with_the_rebuild_command(tmp_path):
    shadow = tmp_path / "shadow"
    (shadow / "horovod").mkdir(parents=True)
    (shadow / "horovod" / "__init__.py").write_text("")
    (shadow / "horovod" / "metadata.json").write_text(json.dumps({"tensorflow": "2.18.0"}))
    result = cli("strategy=horovod", "strategy.num_workers=2", f"hydra.run.dir={tmp_path / 'run'}",
                 cwd=tmp_path, env=_env_with(shadow), timeout=120)
    assert result.returncode == 1, result.stderr
    assert "built against TensorFlow 2.18.0" in result.stderr
    assert "build_horovod.sh" in result.stderr and "Traceback" not in result.stderr


def test_config_only_commands_work_without_horovod(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text(BLOCK_HOROVOD)
    result = cli("--cfg", "job", "strategy=horovod", "strategy.num_workers=4", cwd=tmp_path,
                 env=_env_with(shadow), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "name: horovod" in result.stdout and "num_workers: 4" in result.stdout


@pytest.mark.parametrize("overrides, key", [
    (["strategy.num_workers=3"], "data.batch_size"),  # 64 records per step cannot split over 3 ranks
    (["strategy.hosts=[node1:x]"], "strategy.hosts"),
    (["strategy.num_workers=5", "strategy.hosts=[node1:2,node2:2]"], "strategy.num_workers"),
])
def test_bad_horovod_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        compose("strategy=horovod", *overrides)
    assert error.value.key == key


def test_horovodrun_command_for_localhost_and_for_hosts(tmp_path):
    from scaleflow_horovod.launcher import horovodrun_command

    local = horovodrun_command(compose("strategy=horovod", "strategy.num_workers=2"), str(tmp_path))
    assert local[local.index("-np") + 1] == "2" and local[local.index("-H") + 1] == "localhost:2"
    assert "--gloo" in local and local[local.index("--start-timeout") + 1] == "120"
    assert local[-6:-4] == ["-m", "scaleflow_horovod.worker"]
    multi = horovodrun_command(compose("strategy=horovod", "strategy.num_workers=4",
                                       "strategy.hosts=[node1:2,node2:2]", "strategy.network_interfaces=eth0"),
                               str(tmp_path))
    assert multi[multi.index("-H") + 1] == "node1:2,node2:2" and multi[multi.index("-np") + 1] == "4"
    assert multi[multi.index("--network-interfaces") + 1] == "eth0"


def test_a_rank_behind_rank_0_resumes_from_rank_0s_checkpoint(tmp_path):
    from scaleflow.training.setup import align_backups  # the one policy of every multi-process strategy

    for rank, epoch in ((0, 3), (1, 2)):
        d = tmp_path / "backup" / f"worker-{rank}"
        d.mkdir(parents=True)
        (d / "training_metadata.json").write_text(json.dumps({"epoch": epoch, "batch": -1}))
        (d / "latest.weights.h5").write_text(f"rank {rank}")
    align_backups(str(tmp_path))
    behind = tmp_path / "backup" / "worker-1"
    assert json.loads((behind / "training_metadata.json").read_text())["epoch"] == 3
    assert (behind / "latest.weights.h5").read_text() == "rank 0"
