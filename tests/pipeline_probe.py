"""Helpers for tests/test_pipeline.py, and its 4-device probe.

The pytest session's TensorFlow has 2 logical CPUs; pipeline x mirrored (2 replicas x 2 stages) needs
4, so `python tests/pipeline_probe.py OUT_DIR` runs it in its own process: one device and the hybrid
on the same global batches, and the hybrid's placement, printed as one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import defaultdict

# Small runs: 8 steps of 64 per epoch, Adam, no dropout.
OVERRIDES = ["data.num_examples=512", "trainer.epochs=2", "model.hidden_units=[32,32]", "trainer.optimizer=adam",
             "trainer.learning_rate=0.01"]


def export_weights(run_dir: str) -> list:
    """The trained weights of a run's export, in model order (read from its SavedModel checkpoint)."""
    import tensorflow as tf

    run = json.load(open(os.path.join(run_dir, "run.json")))
    reader = tf.train.load_checkpoint(os.path.join(run["export"]["dir"], "variables", "variables"))
    keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("variables/")]
    return [reader.get_tensor(k) for k in sorted(keys, key=lambda k: int(k.split("/")[1]))]


def max_abs_diff(a: list, b: list) -> float:
    import numpy as np

    assert [w.shape for w in a] == [w.shape for w in b]
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b)))


def placed_model(*overrides: str):
    """(distribution, model) for `overrides`, built exactly as training builds it (not trained)."""
    from scaleflow import registry, tasks
    from scaleflow.models.base import InputSpec
    from scaleflow.testing import compose
    from scaleflow.training import setup

    cfg = compose(*overrides)
    distribution = registry.get("strategy", cfg.strategy.name)().create(cfg)
    task = tasks.get(cfg)
    spec = InputSpec((8,), 3, task.name)
    with distribution.scope():
        model = task.build_model(registry.get("model", cfg.model.name)(), cfg.model, spec)
        model = distribution.prepare_model(model)
        loss, metrics = task.compile_args(cfg.trainer, spec)
        model.compile(optimizer=setup.make_optimizer(cfg.trainer), loss=loss, metrics=metrics)
    return distribution, model


def short(device: str) -> str:
    return device.split("device:")[-1] if device else ""


def variable_devices(model) -> dict:
    """{variable path: [device of each replica's copy]}."""
    out = {}
    for v in model.trainable_variables:
        copies = getattr(v.value, "values", None) or (v.value,)
        out[v.path] = [short(c.device) for c in copies]
    return out


def slot_devices(model) -> dict:
    return {v.path: [short(c.device) for c in (getattr(v.value, "values", None) or (v.value,))]
            for v in model.optimizer.variables if v.path.endswith(("_momentum", "_velocity"))}


def backward_op_devices(distribution, model, batch: int) -> dict:
    """{(replica, layer): {devices}} of the gradient ops the training step's graph holds, per layer
    of the model (op names carry the layer name and, under MirroredStrategy, `replica_<i>/`)."""
    import tensorflow as tf

    layers = [layer.name for layer in model.layers if layer.weights]
    x = tf.TensorSpec((batch, 8), tf.float32)
    y = tf.TensorSpec((batch,), tf.int64)
    strategy = getattr(distribution, "strategy", None)

    if strategy is not None and strategy.num_replicas_in_sync > 1:
        @tf.function
        def step(x, y):
            return strategy.run(model.train_step, args=((x, y),))
    else:
        @tf.function
        def step(x, y):
            return model.train_step((x, y))
    graph = step.get_concrete_function(x, y).graph
    found = defaultdict(set)

    def walk(g):
        for op in g.get_operations():
            if "gradient_tape" in op.name:
                match = re.search(r"(?:^|/)replica_(\d+)/", op.name)  # MirroredStrategy's replica scope
                replica = int(match.group(1)) if match else 0
                parts = op.name.split("/")
                for layer in layers:  # a layer's name scope is its name, made unique with a suffix
                    if any(re.fullmatch(rf"{re.escape(layer)}(_\d+)?", part) for part in parts[:-1]):
                        found[(replica, layer)].add(short(op.device))
        for f in getattr(g, "_functions", {}).values():
            inner = getattr(f, "graph", None)
            if inner is not None:
                walk(inner)

    walk(graph)
    return {f"{r}/{layer}": sorted(d) for (r, layer), d in found.items()}


def predict_op_devices(model, batch: int) -> dict:
    """{layer: {devices}} of the ops of the model's predict step (evaluate's forward is the same)."""
    import tensorflow as tf

    layers = [layer.name for layer in model.layers if layer.weights]
    graph = tf.function(lambda x: model.predict_step((x,))).get_concrete_function(
        tf.TensorSpec((batch, 8), tf.float32)).graph
    found = defaultdict(set)
    for op in graph.get_operations():
        parts = op.name.split("/")
        for layer in layers:
            if op.type == "MatMul" and any(re.fullmatch(rf"{re.escape(layer)}(_\d+)?", p) for p in parts[:-1]):
                found[layer].add(short(op.device))
    return {layer: sorted(d) for layer, d in found.items()}


def main(out_dir: str) -> None:
    """The hybrid: 2 replicas x 2 stages on 4 logical CPUs, against one device."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 4)
    from scaleflow.testing import train

    hybrid = ["strategy=pipeline", "strategy.stages=2", "strategy.micro_batches=4", "strategy.data_parallel=mirrored",
              "hardware.logical_devices=4"]
    one = train(os.path.join(out_dir, "one"), "strategy=default", "hardware.logical_devices=4", *OVERRIDES)
    run = train(os.path.join(out_dir, "hybrid"), *hybrid, *OVERRIDES)
    distribution, model = placed_model(*hybrid, "model.hidden_units=[16,16]")
    print(json.dumps({
        "status": [one["status"], run["status"]],
        "strategy": run["strategy"],
        "export": run["export"],
        "max_abs_diff": max_abs_diff(export_weights(os.path.join(out_dir, "one")),
                                     export_weights(os.path.join(out_dir, "hybrid"))),
        "variables": variable_devices(model),
        "backward": backward_op_devices(distribution, model, batch=16),
    }))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1])
