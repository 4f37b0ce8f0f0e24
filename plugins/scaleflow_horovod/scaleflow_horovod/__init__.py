"""scaleflow-horovod: the `strategy=horovod` plugin.

Horovod's Keras integration does not work under Keras 3 (its DistributedOptimizer hooks Keras 2
methods only, so gradients are silently never averaged), so this plugin is built on Horovod's core
TensorFlow ops: `distribution.py` (optimizer wrapper, broadcast, metric averaging), `launcher.py`
(horovodrun over Gloo), `install.py` (is a usable Horovod there, and how to get one).
"""

__version__ = "0.1.0"
