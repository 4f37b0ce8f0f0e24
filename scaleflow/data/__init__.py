"""Datasets (each registered in `scaleflow.datasets`), train/validation split, sharding, tf.data input."""
