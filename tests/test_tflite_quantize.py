"""Edge exports: float32 and quantized TFLite models, verified in the LiteRT interpreter, with their
size, accuracy and latency in run.json beside the float model's."""

import sys

import numpy as np
import pytest

from tests.conftest import QUICK

EDGE = [*QUICK, "export=tflite", "data.num_features=16", "model.hidden_units=[64]"]


def test_int8_run_exports_a_full_integer_model_and_records_the_edge_trade(train, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    run = train(*EDGE, "export.quantize=int8", "export.calibration_samples=64", run_dir=tmp_path / "run")
    export = run["export"]
    assert export["verified"] and export["quantize"] == "int8" and export["max_abs_diff"] <= 0.15
    interpreter = Interpreter(model_path=export["path"])
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert not [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32]
    edge = export["edge"]
    assert edge["quantize"] == "int8" and edge["bytes"] == export["bytes"]
    assert edge["float"]["bytes"] > edge["bytes"]
    assert edge["size_ratio"] == pytest.approx(edge["bytes"] / edge["float"]["bytes"], abs=1e-3)
    assert 0.0 <= edge["accuracy"] <= 1.0 and 0.0 <= edge["float"]["accuracy"] <= 1.0
    assert edge["accuracy_drop_points"] == pytest.approx(100 * (edge["float"]["accuracy"] - edge["accuracy"]),
                                                         abs=1e-3)
    assert edge["latency_us_per_example"] > 0 and edge["float"]["latency_us_per_example"] > 0
    assert edge["validation_records"] == 102  # the whole validation split: 10% of 1024 records


@pytest.fixture(scope="module")
def fitted(tf):
    """A small trained classifier and its data, shared by the exporter tests below."""
    import keras

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    y = rng.integers(0, 4, 600)
    x = (centres[y] + rng.normal(size=(600, 16))).astype(np.float32)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    return model, x, y


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic"])
def test_each_quantization_verifies_in_litert_within_its_tolerance(fitted, tmp_path, quantize):
    from scaleflow.export.base import ExportRequest
    from scaleflow.export.tflite import TFLite
    from tests.conftest import compose

    model, x, y = fitted
    cfg = compose("export=tflite", f"export.quantize={quantize}", f"export.dir={tmp_path}", "export.name=m")
    exported = TFLite().export(ExportRequest(model=model, cfg=cfg, run_dir=str(tmp_path), sample=x[:64],
                                             validation=(x[500:], y[500:])))
    assert exported["verified"] and "ai_edge_litert" in sys.modules
    edge = exported["edge"]
    assert edge["quantize"] == quantize and edge["accuracy"] >= 0.9
    if quantize == "none":
        assert exported["max_abs_diff"] <= 1e-4 and "float" not in edge
    else:
        assert edge["bytes"] < 0.7 * edge["float"]["bytes"]  # float16 ~1/2, dynamic ~1/4 of the weights, + fixed


def test_per_channel_scales_cost_bytes(fitted):
    from scaleflow.export.tflite import convert

    model, x, _ = fitted
    per_tensor, per_channel = (len(convert(model, "int8", x[:32], per_channel=p)) for p in (False, True))
    assert per_channel > per_tensor + 256 * 8  # a scale and a zero point per channel of the 256-wide layer


def test_a_quantized_model_that_changes_predictions_fails_verification(fitted, tmp_path, monkeypatch):
    from scaleflow.export import tflite
    from scaleflow.export.base import ExportRequest, ExportVerificationError
    from tests.conftest import compose

    model, x, y = fitted
    monkeypatch.setitem(tflite.QUANTIZED_TOLERANCE, "dynamic", 10.0)  # only class agreement can fail now
    real = tflite.litert_predict
    monkeypatch.setattr(tflite, "litert_predict", lambda path: (lambda b: real(path)(b)[:, ::-1]))
    cfg = compose("export=tflite", "export.quantize=dynamic", f"export.dir={tmp_path}", "export.name=m")
    with pytest.raises(ExportVerificationError, match="predicts the trained model's class"):
        tflite.TFLite().export(ExportRequest(model=model, cfg=cfg, run_dir=str(tmp_path), sample=x[:64]))
    assert not (tmp_path / "m" / "1").exists()


def test_quantize_is_a_tflite_key_only():
    from scaleflow.errors import ConfigError
    from tests.conftest import compose

    with pytest.raises(ConfigError, match="export.quantize"):
        compose("export=saved_model", "export.quantize=int8")
    with pytest.raises(ConfigError, match="one of dynamic, float16, int8, none"):
        compose("export=tflite", "export.quantize=int4")
