"""mode=plan: print the predicted topology, cost, scaling and recommendation; write plan.json.

No TensorFlow is imported: answers in about a second.
"""

from __future__ import annotations

import logging
import os

from scaleflow.manifest import atomic_write_json
from scaleflow.planning.report import build, plot, render

log = logging.getLogger("scaleflow")


def run(cfg, run_dir: str) -> dict:
    plan = build(cfg)
    os.makedirs(run_dir, exist_ok=True)
    if cfg.plan.plot:
        plan["plot"] = plot(plan, os.path.join(run_dir, "plan_scaling.png"))
    atomic_write_json(os.path.join(run_dir, "plan.json"), plan)
    print(render(plan))
    print(f"plan written to {os.path.join(run_dir, 'plan.json')}" + (f" and {plan['plot']}" if cfg.plan.plot else ""))
    return plan
