"""Tasks: what a model predicts (classification, binary, multilabel, regression). See base.py."""

from __future__ import annotations

DEFAULT = "classification"


def get(cfg):
    """The task object the config selects (`task=...`; classification when the key is absent)."""
    from scaleflow import registry

    return registry.get("task", cfg.get("task") or DEFAULT)()


def dataset_for(cfg):
    """The configured dataset, reading labels as the configured task needs them."""
    from scaleflow import registry

    return registry.get("dataset", cfg.data.name)(task=get(cfg))


def check_labels(cfg) -> None:
    """Read an in-memory dataset's labels as the task needs them, without TensorFlow: a bad label is a
    ConfigError naming row and value. The arrays stay cached for the training run in this process."""
    dataset = dataset_for(cfg)
    if dataset.in_memory:
        dataset.describe(cfg.data)
