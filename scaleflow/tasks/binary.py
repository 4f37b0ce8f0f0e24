"""task=binary: two classes, one sigmoid output (the probability of the second class)."""

from __future__ import annotations

import numpy as np

from scaleflow.tasks.base import Targets, Task
from scaleflow.tasks.labels import LabelError, check_class_count, class_ids, default_where


class Binary(Task):
    """Binary: targets 0/1 as float (N, 1), a sigmoid head, binary cross-entropy, accuracy and AUC.

    Labels are 0/1 (or true/false), or two class names (`data.class_names`, else sorted: the second
    is the positive class). The export returns `scores` (P(positive)), `class_id` and `class_name`.
    Example: `python -m scaleflow task=binary data=csv data.path=churn.csv data.label_column=churned`
    """

    name = "binary"
    activation = "sigmoid"
    loss = "binary_crossentropy"
    losses = ("binary_crossentropy", "bce", "binary_focal_crossentropy", "hinge", "squared_hinge",
              "mean_squared_error", "mse")
    metrics = ("accuracy", "auc")
    allowed_metrics = ("accuracy", "binary_accuracy", "auc", "precision", "recall", "binary_crossentropy", "bce",
                       "true_positives", "true_negatives", "false_positives", "false_negatives", "hinge",
                       "squared_hinge", "mse", "mean_squared_error")

    def encode(self, labels, config, *, key="data.label", where=default_where, names=None, min_classes=0):
        ids, classes = class_ids(labels, key=key, where=where, class_names=config.get("class_names"),
                                 min_classes=2, task=self.name)
        check_class_count(classes, config.get("max_classes", 1000), key, self.name)  # one class only
        if len(classes) != 2:  # ids beyond 1 (e.g. labels 0, 1, 2)
            bad = int(np.flatnonzero(ids > 1)[0]) if np.any(ids > 1) else 0
            raise LabelError(key, classes[ids[bad]] if ids[bad] < len(classes) else int(ids[bad]),
                             "0 or 1 (or one of two class names) for task=binary",
                             f"The label of {where(bad)} makes a third class; for several classes use "
                             "task=classification")
        return Targets(ids.astype(np.float32).reshape(-1, 1), 2, tuple(classes))

    def num_outputs(self, info):
        return 1

    def tf_targets(self, label):
        import tensorflow as tf

        return tf.reshape(tf.cast(label, tf.float32), [1])

    def metric(self, name, spec):
        import keras

        if name == "accuracy":
            return keras.metrics.BinaryAccuracy(name=name)
        return super().metric(name, spec)

    def serving_outputs(self, scores, class_names, target_names):
        import tensorflow as tf

        class_id = tf.cast(scores[:, 0] > 0.5, tf.int64)
        return {"scores": scores, "class_id": class_id,
                "class_name": tf.gather(tf.constant(list(class_names), tf.string), class_id)}
