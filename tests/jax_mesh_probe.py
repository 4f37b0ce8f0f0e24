"""Run by tests/test_model_parallel_jax.py in ONE process with KERAS_BACKEND=jax and 4 XLA host devices
(set by the test before Python starts): scaleflow's training run (`training.train.run`) under several
meshes on the same config, then a JSON line comparing each run's final weights with one device's.

    python tests/jax_mesh_probe.py <work dir> <mesh>... (mesh "DxM", e.g. 1x1 1x2 1x4 2x2)

The first mesh is the reference. Weights come back through a registered callback (`trainer.callbacks`,
installed here as a plugin would be: a dist-info with its entry point) that saves every variable when
training ends; placement from run.json, which the run read from the JAX arrays' shardings. No export
(tests/test_model_parallel_jax.py's hybrid run verifies one). Two more runs give layout rules that cannot apply (they must stop before training).
"""

from __future__ import annotations

import json
import os
import sys

COMMON = ["data.num_examples=512", "data.batch_size=32", "data.validation_split=0.0", "trainer.epochs=2",
          "trainer.optimizer=adam", "trainer.learning_rate=0.01", "model.dropout=0.0", "model.hidden_units=[16,8]",
          "trainer.verbose=quiet", "logger=none", "export=none", "data.shuffle_buffer=64",
          "trainer.callbacks=[final_weights]"]


class FinalWeights:
    """`trainer.callbacks=[final_weights]`: every model variable, saved to final_weights.npz in the run
    dir when training ends."""

    name = "final_weights"

    @classmethod
    def create(cls, cfg, run_dir, distribution, global_batch, steps_per_epoch):
        import keras
        import numpy as np

        class Save(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                np.savez(os.path.join(run_dir, "final_weights.npz"),
                         **{v.path: np.asarray(v.value) for v in self.model.weights})

        return Save()


def install_callback(site: str) -> None:
    """What `pip install` of a plugin leaves: a dist-info whose entry point names FinalWeights."""
    info = os.path.join(site, "mesh_probe-0.1.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: mesh-probe\nVersion: 0.1\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as f:
        f.write("[scaleflow.callbacks]\nfinal_weights = jax_mesh_probe:FinalWeights\n")
    sys.path[:0] = [site, os.path.dirname(os.path.abspath(__file__))]


def overrides_for(mesh: str) -> list[str]:
    data, model = (int(n) for n in mesh.split("x"))
    if data == 1:
        return ["strategy=model_parallel", f"hardware.logical_devices={model}"]
    return ["strategy=hybrid", f"strategy.mesh=[{data},{model}]", f"hardware.logical_devices={data * model}"]


def main(work: str, meshes: list[str]) -> None:
    import numpy as np

    install_callback(os.path.join(work, "site"))
    from scaleflow.cli import compose
    from scaleflow.training.train import run

    results = {}
    for mesh in meshes:
        run_dir = os.path.join(work, mesh)
        run(compose([*COMMON, *overrides_for(mesh)]), run_dir)
        manifest = json.load(open(os.path.join(run_dir, "run.json")))
        with np.load(os.path.join(run_dir, "final_weights.npz")) as saved:
            weights = {k: saved[k] for k in saved.files}
        results[mesh] = {"weights": weights, "run": manifest}
    # Layout rules that cannot apply stop the run once the model is built, before its first step.
    from scaleflow.errors import ConfigError

    refused = {}
    for name, rule in (("unmatched", "{dense_9/kernel:[null,model]}"), ("indivisible", "{scores/kernel:[null,model]}")):
        run_dir = os.path.join(work, name)
        try:
            run(compose([*COMMON, *overrides_for("1x4"), f"strategy.layout={rule}"]), run_dir)
            refused[name] = None
        except ConfigError as e:
            manifest = json.load(open(os.path.join(run_dir, "run.json")))
            refused[name] = {"key": e.key, "message": str(e), "status": manifest["status"],
                             "epochs": manifest.get("epochs_completed")}
    reference = results[meshes[0]]["weights"]
    report = {}
    for mesh, result in results.items():
        s = result["run"]["strategy"]
        assert sorted(result["weights"]) == sorted(reference) and reference, (mesh, sorted(result["weights"]))
        report[mesh] = {
            "max_abs_diff": max(float(np.max(np.abs(result["weights"][k] - reference[k]))) for k in reference),
            "moved": max(float(np.max(np.abs(result["weights"][k]))) for k in reference),
            "status": result["run"]["status"], "mesh": s["mesh"]["shape"], "num_replicas": s["num_replicas"],
            "sharding": {p: v["sharding"] for p, v in s["layout"]["variables"].items()},
            "shapes": {p: v["shape"] for p, v in s["layout"]["variables"].items()},
            "parameter_bytes_per_device": s["parameter_bytes_per_device"],
            "optimizer_bytes_per_device": s["optimizer_bytes_per_device"],
            "parameter_bytes_replicated": s["parameter_bytes_replicated"],
            "loss": result["run"]["metrics"]["history"]["loss"],
        }
    print("PROBE " + json.dumps({"meshes": report, "refused": refused}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
