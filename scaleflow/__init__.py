"""scaleflow: declarative, config-driven training of Keras models on TensorFlow at any scale.

Importing scaleflow never imports TensorFlow; only `mode=train` does.
"""

__version__ = "0.1.0"
