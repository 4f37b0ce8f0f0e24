"""mode=plugins: what the registry provides, by kind, with the distribution of each."""

from __future__ import annotations

import json
import os

from scaleflow import registry


def table() -> dict:
    return {kind: {name: {"object": r.value, "distribution": r.distribution}
                   for name, r in registry.registrations(kind).items()} for kind in registry.KINDS}


def run(cfg, run_dir: str) -> dict:
    data = table()
    lines = []
    for kind, entries in data.items():
        lines.append(f"{kind} ({registry.KINDS[kind]}):")
        width = max((len(n) for n in entries), default=0)
        for name, entry in entries.items():
            lines.append(f"  {name:<{width}}  {entry['object']:<45} [{entry['distribution']}]")
    print("\n".join(lines))
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "plugins.json"), "w") as f:
        json.dump(data, f, indent=2)
    return data
