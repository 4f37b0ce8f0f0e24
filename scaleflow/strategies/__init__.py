"""Parallel strategies. Each is registered in the `scaleflow.strategies` entry-point group."""
