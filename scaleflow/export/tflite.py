"""TensorFlow Lite export for edge devices: float32 or post-training quantized, verified with LiteRT.

`export.quantize`:
    none      float32 (matches Keras to ~1e-7)
    dynamic   int8 weights, float activations (about 1/4 of the bytes, no calibration)
    float16   float16 weights (about 1/2 of the bytes; runs in float32 on CPU)
    int8      full integer: int8 weights and activations and int8 input/output, calibrated on
              `export.calibration_samples` records of the run's own training shard (what edge
              accelerators need). Clients quantize inputs with the input tensor's scale/zero point.

Verification reloads the file in the LiteRT interpreter (`ai-edge-litert`; `tf.lite.Interpreter` is
deprecated) and compares with the trained model: within a tolerance that matches the quantization AND
with the same predicted class on (nearly) every record. For a quantized model run.json's `export.edge`
records its bytes, validation accuracy and latency per example in the interpreter beside the float32
TFLite model's, so the trade is visible in one place.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np

from scaleflow.config.schema import TFLiteExportConfig
from scaleflow.export.base import Exporter, ExportVerificationError

log = logging.getLogger("scaleflow")

# Max abs difference of output probabilities allowed per quantization, and the fraction of records that
# must keep their predicted class. Quantization error grows from float16 (10-bit mantissa) to dynamic
# (int8 weights) to int8 (activations too; outputs are steps of 1/256), and a record near a decision
# boundary may flip class once quantized: agreement below these fractions means a broken model.
QUANTIZED_TOLERANCE = {"float16": 1e-2, "dynamic": 5e-2, "int8": 0.15}
MIN_AGREEMENT = {"none": 0.98, "float16": 0.98, "dynamic": 0.95, "int8": 0.95}
LATENCY_EXAMPLES = 200  # single-example invocations timed for `latency_us_per_example`


def float32_copy(model):
    """TFLite builtins reject bfloat16: rebuild the model in float32 and copy the weights."""
    import keras

    if all(w.dtype == "float32" for w in model.weights) and model.dtype_policy.name == "float32":
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"  # each layer's config carries its mixed policy; replace it
        return layer.__class__.from_config(config)

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = keras.models.clone_model(model, clone_function=as_float32)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clone.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return clone


def convert(model, quantize: str = "none", representative: np.ndarray | None = None,
            per_channel: bool = False) -> bytes:
    """The .tflite flatbuffer of `model`, converted from a `model.export` SavedModel (converting a
    `tf.saved_model.save` directory silently yields NaN outputs)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved:
        float32_copy(model).export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            # The converter's only switch for this is private (TF 2.21); per-channel is its default.
            converter._experimental_disable_per_channel = not per_channel
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if representative is None or not len(representative):
                raise ExportVerificationError("export.quantize=int8 needs calibration records (none were given)")
            samples = np.asarray(representative, dtype=np.float32)

            def representative_dataset():
                for i in range(len(samples)):
                    yield [samples[i:i + 1]]

            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()


def litert_predict(model_path: str):
    """`predict(x float32) -> float32 outputs` with the LiteRT interpreter; quantizes inputs and
    dequantizes outputs of an integer model with the tensors' own scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    shape: list = [None]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if shape[0] != x.shape:  # resizing re-plans the graph: only when the batch shape changes
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        if np.issubdtype(inp["dtype"], np.integer):
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale + in_zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            y = (y.astype(np.float32) - out_zero) * out_scale
        return np.asarray(y, dtype=np.float32)

    predict.interpreter = interpreter
    return predict


def latency_us_per_example(model_path: str, x: np.ndarray, examples: int = LATENCY_EXAMPLES,
                           repeats: int = 3) -> float:
    """Time of one single-example invocation in the LiteRT interpreter (set input, invoke, read output;
    inputs quantized beforehand, as a device's pipeline would), median of `repeats` passes over
    `examples` records after a warm-up."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = np.asarray(x[: max(1, min(examples, len(x)))], dtype=np.float32)
    interpreter.resize_tensor_input(inp["index"], (1, *rows.shape[1:]))
    interpreter.allocate_tensors()
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        rows = np.clip(np.round(rows / scale + zero), info.min, info.max).astype(inp["dtype"])
    singles = [rows[i:i + 1] for i in range(len(rows))]
    passes = []
    for _ in range(repeats + 1):  # the first pass warms up
        started = time.perf_counter()
        for row in singles:
            interpreter.set_tensor(inp["index"], row)
            interpreter.invoke()
            interpreter.get_tensor(out["index"])
        passes.append((time.perf_counter() - started) / len(singles))
    return round(float(np.median(passes[1:])) * 1e6, 2)


def predicted(outputs: np.ndarray, task: str) -> np.ndarray | None:
    """What the model decides: the class (classification), the >0.5 labels (binary, multilabel);
    None for regression (there, only the tolerance applies)."""
    outputs = np.asarray(outputs)
    if task == "regression":
        return None
    if task == "multilabel" or outputs.shape[-1] == 1:
        return outputs > 0.5
    return np.argmax(outputs, axis=-1)


def accuracy(predict, x: np.ndarray, y: np.ndarray, task: str = "classification", batch: int = 256) -> float | None:
    """Validation accuracy as the task's Keras accuracy counts it; None for regression."""
    outputs = np.concatenate([np.asarray(predict(x[i:i + batch])) for i in range(0, len(x), batch)])
    decided = predicted(outputs, task)
    if decided is None:
        return None
    y = np.asarray(y)
    if decided.dtype == bool:  # binary / multilabel: each label against its 0/1 target
        return float(np.mean(decided.reshape(-1) == (y.reshape(-1) > 0.5)))
    return float(np.mean(decided == y.reshape(-1)))


class TFLite(Exporter):
    """`model.tflite` in `<export.dir>/<export.name>/<version>/`, optionally quantized.

    Example: `python -m scaleflow export=tflite export.quantize=int8 export.calibration_samples=256`
    """

    name = "tflite"
    FILE = "model.tflite"
    Config = TFLiteExportConfig

    def write(self, model, directory, request) -> dict:
        quantize = request.cfg.export.get("quantize", "none")
        flatbuffer = convert(model, quantize, self._calibration(request) if quantize == "int8" else None,
                             per_channel=bool(request.cfg.export.get("per_channel", False)))
        os.makedirs(directory)
        path = os.path.join(directory, self.FILE)
        with open(path, "wb") as f:
            f.write(flatbuffer)
        fields = {"path": path, "bytes": len(flatbuffer), "quantize": quantize}
        if request.is_chief:  # every .tflite is an edge model: its size, accuracy and latency go to run.json
            fields["edge"] = self.edge_report(model, path, request, quantize)
        return fields

    def load(self, directory, request):
        return litert_predict(os.path.join(directory, self.FILE))

    def tolerance(self, cfg) -> float:
        quantize = cfg.export.get("quantize", "none")
        return max(super().tolerance(cfg), QUANTIZED_TOLERANCE.get(quantize, 0.0))

    def verify(self, directory, request) -> float:
        """Max abs difference within the quantization's tolerance, and the predicted classes agree."""
        diff = super().verify(directory, request)
        quantize = request.cfg.export.get("quantize", "none")
        got = self.load(directory, request)(request.sample)
        expected = self.reference(request.model, request.sample)
        task = (request.metadata or {}).get("task") or "classification"
        ours, theirs = predicted(got, task), predicted(expected, task)
        if ours is not None:
            agreement = float(np.mean(ours == theirs))
            if agreement < MIN_AGREEMENT[quantize]:
                raise ExportVerificationError(
                    f"export verification failed: the {quantize} TFLite model predicts the trained model's class "
                    f"on {agreement:.1%} of {len(got)} records (at least {MIN_AGREEMENT[quantize]:.0%} required)")
        return diff

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def _calibration(request) -> np.ndarray:
        samples = request.cfg.export.get("calibration_samples", 256)
        if request.representative is not None and len(request.representative):
            return np.asarray(request.representative[:samples], dtype=np.float32)
        log.warning("export.quantize=int8: no training records were given for calibration; using the "
                    "%d verification records", len(request.sample))
        return np.asarray(request.sample, dtype=np.float32)

    def edge_report(self, model, path: str, request, quantize: str) -> dict:
        """Size, validation accuracy and latency per example of this model, beside float32 TFLite's."""
        predict = litert_predict(path)
        x, y = request.validation if request.validation is not None else (request.sample, None)
        report = {"quantize": quantize, "bytes": os.path.getsize(path),
                  "latency_us_per_example": latency_us_per_example(path, x),
                  "validation_records": int(len(x))}
        task = (request.metadata or {}).get("task") or "classification"
        if y is not None and task != "regression":
            report["accuracy"] = accuracy(predict, x, y, task)
            report["keras_accuracy"] = accuracy(lambda b: self.reference(model, b), x, y, task)
        if quantize != "none":
            with tempfile.TemporaryDirectory() as tmp:
                float_path = os.path.join(tmp, self.FILE)
                with open(float_path, "wb") as f:
                    f.write(convert(model, "none"))
                float_predict = litert_predict(float_path)
                baseline = {"bytes": os.path.getsize(float_path),
                            "latency_us_per_example": latency_us_per_example(float_path, x)}
                if "accuracy" in report:
                    baseline["accuracy"] = accuracy(float_predict, x, y, task)
            report["float"] = baseline
            report["size_ratio"] = round(report["bytes"] / baseline["bytes"], 4)
            if "accuracy" in report:
                report["accuracy_drop_points"] = round(100 * (baseline["accuracy"] - report["accuracy"]), 3)
        return report
