"""A strategy plugin that exists only for the tests: proof that a new strategy is one module plus one
entry point (see tests/test_strategy_plugin.py), with no edit anywhere else in scaleflow."""
