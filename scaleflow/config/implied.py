"""Config choices implied by other choices, added to the command line once, before composing.

`strategy=tpu` implies `hardware=tpu`: Hydra 1.3 forbids a group file from overriding another
group ("Could not override 'hardware@strategy.hardware'"), so the choice is added to the
overrides, where `--cfg job`, `.hydra/overrides.yaml` and run.json all show it. A strategy states
what it implies in its `implies` class attribute.
"""

from __future__ import annotations

from typing import Sequence

from scaleflow import registry


def implied_overrides(overrides: Sequence[str]) -> list[str]:
    """Overrides the chosen strategy implies for keys the user did not set. Sweeps over strategy
    imply nothing (each job would need its own)."""
    given = {o.lstrip("+~").partition("=")[0]: o.partition("=")[2] for o in overrides if "=" in o}
    name = given.get("strategy")
    if not name or "," in name or name not in registry.names("strategy"):
        return []
    implies = registry.get("strategy", name).implies
    return [f"{key}={value}" for key, value in implies.items() if key not in given]


def with_implied(overrides: Sequence[str]) -> list[str]:
    """`overrides` followed by what they imply (idempotent: applying it twice adds nothing)."""
    return list(overrides) + implied_overrides(overrides)
