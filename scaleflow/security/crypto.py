"""Files at rest: sealed exports are checked against their `.sha256` file (no TensorFlow)."""

from __future__ import annotations

import os

from scaleflow.export.integrity import Verification, sha256_file

CHECKSUM_SUFFIX = ".sha256"


def verify_sealed(path: str) -> Verification:
    """A sealed archive against its `<archive>.sha256` (`sha256:<hex>  <name>`)."""
    checksum_file = path + CHECKSUM_SUFFIX
    try:
        with open(checksum_file) as f:
            expected = f.read().split()[0].removeprefix("sha256:")
    except (OSError, IndexError):
        return Verification(path, False, [f"no readable {os.path.basename(checksum_file)} beside it"])
    actual = sha256_file(path)
    if actual != expected:
        return Verification(path, False, [f"changed file {os.path.basename(path)} (sha256 {actual[:12]}..., "
                                          f"expected {expected[:12]}...)"])
    return Verification(path, True, [], {"checksum": "sha256:" + actual})
