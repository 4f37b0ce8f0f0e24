"""No export."""

from __future__ import annotations

from scaleflow.export.base import Exporter


class NoExport(Exporter):
    """`export=none`: the run ends after training; run.json's export says so."""

    name = "none"

    def export(self, model, cfg, run_dir, sample, is_chief=True) -> dict:
        return {"path": None, "format": "none", "verified": False, "max_abs_diff": None}
