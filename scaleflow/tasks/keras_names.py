"""Keras' own loss and metric names, kept here so `trainer.loss` / `trainer.metrics` are checked before
TensorFlow is imported (importing Keras to ask it costs seconds). tests/test_tasks.py compares these
lists with the installed Keras, so a Keras upgrade that adds or drops a name fails a test, not a run.
"""

from __future__ import annotations

# keras.losses.get(name) accepts each of these (Keras 3.15; snake_case function names and aliases).
LOSSES = (
    "bce", "binary_crossentropy", "binary_focal_crossentropy", "categorical_crossentropy",
    "categorical_focal_crossentropy", "categorical_hinge", "circle", "cosine_similarity", "ctc", "dice",
    "hinge", "huber", "kl_divergence", "kld", "log_cosh", "mae", "mape", "mean_absolute_error",
    "mean_absolute_percentage_error", "mean_squared_error", "mean_squared_logarithmic_error", "mse", "msle",
    "poisson", "sparse_categorical_crossentropy", "squared_hinge", "tversky",
)

# keras.metrics.get(name) accepts each of these (snake_case names; class names are not config names).
METRICS = (
    "accuracy", "auc", "bce", "binary_accuracy", "binary_crossentropy", "binary_io_u", "categorical_accuracy",
    "categorical_crossentropy", "categorical_hinge", "concordance_correlation", "cosine_similarity", "f1_score",
    "f_beta_score", "false_negatives", "false_positives", "hinge", "io_u", "kl_divergence", "log_cosh_error",
    "mae", "mape", "mean_absolute_error", "mean_absolute_percentage_error", "mean_io_u",
    "mean_squared_error", "mean_squared_logarithmic_error", "mse", "msle", "one_hot_io_u",
    "one_hot_mean_io_u", "pearson_correlation", "poisson", "precision", "r2_score", "recall",
    "root_mean_squared_error", "sparse_categorical_accuracy", "sparse_categorical_crossentropy",
    "sparse_top_k_categorical_accuracy", "squared_hinge", "top_k_categorical_accuracy", "true_negatives",
    "true_positives",
    # Not usable from a bare name (they need constructor arguments): precision_at_recall,
    # recall_at_precision, sensitivity_at_specificity, specificity_at_sensitivity, mean, sum, metric.
)

# Names in keras' registries that are not a loss or metric a config can name (base classes, wrappers,
# or metrics that need constructor arguments); the consistency test ignores them.
NOT_CONFIGURABLE = ("loss", "loss_function_wrapper", "metric", "mean", "sum", "mean_metric_wrapper",
                    "precision_at_recall", "recall_at_precision", "sensitivity_at_specificity",
                    "specificity_at_sensitivity")

# Metrics where a larger value is better: `mode=auto` monitors them with 'max'.
HIGHER_IS_BETTER = frozenset((
    "accuracy", "auc", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "precision", "recall", "f1_score",
    "f_beta_score", "r2_score", "true_positives", "true_negatives", "io_u", "mean_io_u", "binary_io_u",
    "one_hot_io_u", "one_hot_mean_io_u", "pearson_correlation", "concordance_correlation", "cosine_similarity",
))
