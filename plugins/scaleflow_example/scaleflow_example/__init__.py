"""Example scaleflow plugin: a model and a dataset, registered through entry points."""
