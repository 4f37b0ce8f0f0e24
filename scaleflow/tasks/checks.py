"""Config rules for the task, its loss and its metrics: checked before TensorFlow is imported."""

from __future__ import annotations

from scaleflow import registry
from scaleflow.errors import ConfigError, did_you_mean, one_of
from scaleflow.tasks import keras_names


def check_task_config(cfg) -> None:
    """ConfigError for an unknown task, a loss or metric Keras does not know or that does not fit the
    task, or unusable class names."""
    task = registry.get("task", cfg.get("task") or "classification")()  # unknown -> did-you-mean
    t = cfg.trainer
    loss = t.get("loss")
    if loss is not None:
        if loss not in keras_names.LOSSES:
            raise ConfigError("trainer.loss", loss, "a Keras loss name (" + one_of(keras_names.LOSSES) + ")",
                              did_you_mean(loss, keras_names.LOSSES))
        if loss not in task.losses:
            fits = [name for name in registry.names("task") if loss in registry.get("task", name).losses]
            raise ConfigError("trainer.loss", loss, f"a loss for task={task.name}: {one_of(task.losses)}",
                              f"{loss} fits task={' or task='.join(fits)}" if fits else None)
    metrics = t.get("metrics")
    if metrics is not None:
        seen = set()
        for metric in metrics:
            key = "trainer.metrics"
            if metric not in keras_names.METRICS:
                raise ConfigError(key, metric, "Keras metric names (" + one_of(keras_names.METRICS) + ")",
                                  did_you_mean(metric, keras_names.METRICS))
            if metric not in task.allowed_metrics:
                raise ConfigError(key, metric, f"metrics for task={task.name}: {one_of(task.allowed_metrics)}",
                                  did_you_mean(metric, task.allowed_metrics))
            if metric in seen:
                raise ConfigError(key, list(metrics), "each metric once", f"{metric} is listed twice")
            seen.add(metric)
    names = cfg.data.get("class_names")
    if names is not None:
        names = [str(n) for n in names]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError("data.class_names", names, "distinct names", f"{duplicated[0]!r} is listed twice")
        if any(not n.strip() for n in names):
            raise ConfigError("data.class_names", names, "non-empty names")
        if task.name == "regression":
            raise ConfigError("data.class_names", names, "null for task=regression (targets have no classes)")
        if task.name == "binary" and len(names) != 2:
            raise ConfigError("data.class_names", names, "two names for task=binary: [negative, positive]")


def produced_metrics(cfg, validation: bool) -> list[str]:
    """The metric names a run of `cfg` logs each epoch (what early stopping and keep_best may monitor)."""
    task = registry.get("task", cfg.get("task") or "classification")()
    names = ["loss", *task.metric_names(cfg.trainer)]
    return names + [f"val_{n}" for n in names] if validation else names
