"""Hydra launcher plugin: each multirun job in its own process, several side by side."""

__version__ = "0.1.0"
