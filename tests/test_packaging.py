"""The wheel ships every package: pyproject.toml lists packages explicitly (conf/ is mapped into
scaleflow.conf), so a new subpackage that is not listed would work from a checkout and be missing
from every install."""

from __future__ import annotations

import tomllib

from conftest import REPO


def test_every_scaleflow_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "scaleflow").rglob("__init__.py")}
    assert not found - listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
