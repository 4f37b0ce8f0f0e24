"""task=multilabel: any number of labels per record, one sigmoid output per label."""

from __future__ import annotations

import numpy as np

from scaleflow.tasks.base import Targets, Task
from scaleflow.tasks.labels import LabelError, check_class_count, default_where, numeric_matrix

SEPARATOR = "|"


class Multilabel(Task):
    """Multi-label: multi-hot targets (N, labels) as float, a sigmoid head, binary cross-entropy.

    Labels are either an (N, labels) 0/1 array (npz; tfrecord with `data.num_classes`) or one string
    per record with the labels joined by '|' ("sports|politics"; a CSV column; empty: none). `accuracy` is the per-label binary accuracy. The export returns `scores`, `labels`
    (0/1 per label), `class_name` (the top-scoring label) and `class_names` (the predicted labels
    joined by '|').
    Example: `python -m scaleflow task=multilabel data=synthetic data.num_classes=5`
    """

    name = "multilabel"
    activation = "sigmoid"
    loss = "binary_crossentropy"
    losses = ("binary_crossentropy", "bce", "binary_focal_crossentropy", "hinge", "squared_hinge")
    metrics = ("accuracy", "auc")
    allowed_metrics = ("accuracy", "binary_accuracy", "auc", "precision", "recall", "binary_crossentropy", "bce",
                       "true_positives", "true_negatives", "false_positives", "false_negatives", "hinge",
                       "squared_hinge")

    def encode(self, labels, config, *, key="data.label", where=default_where, names=None, min_classes=0):
        arr = np.asarray(labels)
        listed = config.get("class_names")
        if arr.ndim == 2 or arr.dtype.kind in "iubf":
            y = numeric_matrix(arr, key=key, where=where, task=self.name, allowed="0 or 1 per label")
            bad = np.argwhere((y != 0) & (y != 1))
            if len(bad):
                i, j = map(int, bad[0])
                raise LabelError(key, float(y[i, j]), "0 or 1 per label for task=multilabel",
                                 f"The label of {where(i)} is not 0 or 1")
            classes = [str(n) for n in (listed or names or [f"label_{j}" for j in range(y.shape[1])])]
            if len(classes) != y.shape[1]:
                raise LabelError("data.class_names", list(classes), f"{y.shape[1]} names, one per label column")
        else:
            sets = [[t.strip() for t in str(v.decode() if isinstance(v, bytes) else v).split(SEPARATOR) if t.strip()]
                    for v in arr.tolist()]
            classes = [str(n) for n in listed] if listed else sorted({t for s in sets for t in s})
            index = {c: j for j, c in enumerate(classes)}
            y = np.zeros((len(sets), len(classes)))
            for i, s in enumerate(sets):
                for t in s:
                    if t not in index:
                        raise LabelError(key, t, "one of data.class_names: " + ", ".join(classes),
                                         f"A label of {where(i)} is not a listed class")
                    y[i, index[t]] = 1
        check_class_count(classes, config.get("max_classes", 1000), key, self.name)
        return Targets(y.astype(np.float32), len(classes), tuple(classes))

    def tf_targets(self, label):
        import tensorflow as tf

        return tf.cast(label, tf.float32)

    def metric(self, name, spec):
        import keras

        if name == "accuracy":
            return keras.metrics.BinaryAccuracy(name=name)
        if name == "auc":
            return keras.metrics.AUC(name=name, multi_label=True, num_labels=spec.num_outputs)
        return super().metric(name, spec)

    def serving_outputs(self, scores, class_names, target_names):
        import tensorflow as tf

        names = tf.constant(list(class_names), tf.string)
        chosen = scores > 0.5
        every = tf.broadcast_to(names, tf.shape(scores))
        joined = tf.strings.reduce_join(tf.ragged.boolean_mask(every, chosen), axis=-1, separator=SEPARATOR)
        return {"scores": scores, "labels": tf.cast(chosen, tf.int64),
                "class_name": tf.gather(names, tf.argmax(scores, axis=-1)), "class_names": joined}
