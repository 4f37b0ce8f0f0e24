"""mode=verify: are these exported files still the ones training wrote? (no TensorFlow)

    python -m scaleflow mode=verify path=outputs/2026-11-27/10-00-00/export/mlp/3   # one version
    python -m scaleflow mode=verify path=outputs/2026-11-27/10-00-00/export/mlp     # every version
    python -m scaleflow mode=verify path=outputs/2026-11-27/10-00-00                # a run dir
    python -m scaleflow mode=verify path=model.sealed                               # a sealed archive

Each export version dir is re-hashed against its `scaleflow_export.json` (see export/integrity.py);
a missing, changed or added file, or an edited manifest, is named. A sealed archive
(`export.seal=true`) is checked against its `.sha256` file. Prints one line per export; exit status 1
when anything does not match, 2 when `path` names nothing to verify.
"""

from __future__ import annotations

import json
import os

from scaleflow.errors import ConfigError, ScaleflowError
from scaleflow.export.integrity import MANIFEST_NAME, Verification, verify_export


def export_dirs(path: str) -> list[str]:
    """The export version dirs `path` stands for: itself, its versions, or every export in a run dir."""
    if os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        return [path]
    versions = sorted((d for d in os.listdir(path) if d.isdigit()), key=int)
    if versions:
        return [os.path.join(path, d) for d in versions]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        if MANIFEST_NAME in files:
            found.append(root)
            dirs[:] = []
    exported = _run_json_export_dir(path)
    if exported and os.path.isdir(exported) and os.path.realpath(exported) not in map(os.path.realpath, found):
        found.append(exported)  # export.dir outside the run dir
    return found


def _run_json_export_dir(run_dir: str) -> str | None:
    try:
        with open(os.path.join(run_dir, "run.json")) as f:
            return ((json.load(f).get("export") or {}).get("dir"))
    except (OSError, ValueError, AttributeError):
        return None


def verify_path(path: str) -> list[Verification]:
    """Every verification `path` calls for; raises ConfigError when there is nothing to verify."""
    path = os.path.expanduser(str(path))
    if os.path.isfile(path):
        from scaleflow.export.seal import verify_sealed

        return [verify_sealed(path)]
    if not os.path.isdir(path):
        raise ConfigError("path", path, "an export version dir, a model dir, a run dir or a sealed archive",
                          "Nothing exists at that path")
    dirs = export_dirs(path)
    if not dirs:
        raise ConfigError("path", path, "a dir holding an export (with scaleflow_export.json)",
                          "No export was found under it")
    return [verify_export(d) for d in dirs]


def _label(result: Verification) -> str:
    identity = (result.manifest or {}).get("identity") or {}
    checksum = (result.manifest or {}).get("checksum") or ""
    return f"{identity.get('name')}:{identity.get('version')} {checksum[:19]}" if identity else ""


def run(cfg, run_dir: str) -> dict:
    if not cfg.get("path"):
        raise ConfigError("path", None, "what to verify: an export version dir, a model dir, a run dir or a "
                          "sealed archive", "e.g. mode=verify path=outputs/<date>/<time>/export/mlp")
    results = verify_path(cfg.path)
    for result in results:
        if result.ok:
            print(f"ok       {result.path}  {_label(result)}")
        else:
            print(f"CHANGED  {result.path}  {_label(result)}")
            for problem in result.problems:
                print(f"         - {problem}")
    bad = [r for r in results if not r.ok]
    from scaleflow.security import audit

    audit.record("verify", path=os.path.abspath(str(cfg.path)), ok=not bad, exports=len(results),
                 problems={r.path: r.problems for r in bad} or None)
    if bad:
        raise ScaleflowError(f"mode=verify: {len(bad)} of {len(results)} export(s) do not match their checksums: "
                             + ", ".join(r.path for r in bad))
    print(f"{len(results)} export(s) verified")
    return {"verified": len(results)}
