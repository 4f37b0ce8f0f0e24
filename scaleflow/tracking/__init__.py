"""Experiment trackers (`logger=`): where a run's params, metrics and models are also recorded."""
