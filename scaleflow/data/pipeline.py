"""The old import path of the input plan and the tf.data input, kept so existing imports work.
New code imports from `scaleflow.data.planning` (NumPy), `scaleflow.data.input` (tf.data) and
`scaleflow.data.rules` (config-only rules)."""

from scaleflow.data.input import input_fn
from scaleflow.data.planning import InputPlan, plan_input, resolve_level
from scaleflow.data.rules import check_shard_config
from scaleflow.data.sharding import files_of

__all__ = ["InputPlan", "plan_input", "input_fn", "resolve_level", "files_of", "check_shard_config"]
