"""task=classification (the default): one class per record, softmax over the classes."""

from __future__ import annotations

from scaleflow.tasks.base import Targets, Task
from scaleflow.tasks.labels import check_class_count, class_ids, default_where


class Classification(Task):
    """Multiclass: sparse integer targets, softmax head, sparse categorical cross-entropy.

    Labels are class ids (kept as they are) or class names (`data.class_names`, else sorted).
    The export returns `scores` (probabilities), `class_id` and `class_name`.
    Example: `python -m scaleflow task=classification data=csv data.path=iris.csv data.label_column=species`
    """

    name = "classification"
    activation = "softmax"
    loss = "sparse_categorical_crossentropy"
    losses = ("sparse_categorical_crossentropy",)
    metrics = ("accuracy",)
    allowed_metrics = ("accuracy", "sparse_categorical_accuracy", "sparse_top_k_categorical_accuracy",
                       "sparse_categorical_crossentropy")

    def encode(self, labels, config, *, key="data.label", where=default_where, names=None, min_classes=0):
        ids, classes = class_ids(labels, key=key, where=where, class_names=config.get("class_names"),
                                 min_classes=min_classes, task=self.name)
        check_class_count(classes, config.get("max_classes", 1000), key, self.name)
        return Targets(ids, len(classes), tuple(classes))

    def tf_targets(self, label):
        import tensorflow as tf

        return tf.cast(label, tf.int32)

    def metric(self, name, spec):
        import keras

        if name == "accuracy":  # the sparse flavour, named as the user wrote it
            return keras.metrics.SparseCategoricalAccuracy(name=name)
        return super().metric(name, spec)

    def serving_outputs(self, scores, class_names, target_names):
        import tensorflow as tf

        class_id = tf.argmax(scores, axis=-1)
        return {"scores": scores, "class_id": class_id,
                "class_name": tf.gather(tf.constant(list(class_names), tf.string), class_id)}
