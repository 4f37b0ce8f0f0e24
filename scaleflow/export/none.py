"""No export."""

from __future__ import annotations

from scaleflow.export.base import Exporter, ExportRequest


class NoExport(Exporter):
    """`export=none`: the run ends after training; run.json's export says so."""

    name = "none"
    backends = ("tensorflow", "jax")

    def export(self, request: ExportRequest) -> dict:  # nothing to stage, write or verify
        return {"path": None, "format": "none", "verified": False, "max_abs_diff": None}

    def write(self, model, directory, request) -> dict:
        raise NotImplementedError("export=none writes nothing")

    def load(self, directory, request):
        raise NotImplementedError("export=none writes nothing")
