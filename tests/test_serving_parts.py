"""The pieces of mode=serve on their own (no server, no TensorFlow): dynamic batching, drift, TF
Serving's request bodies, the warm-up file's encoding."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest


def test_concurrent_requests_share_model_calls_and_get_their_own_rows_back():
    from scaleflow.serving.batcher import Batcher

    calls = []

    def predict(x):
        calls.append(len(x))
        return x * 2

    async def main(max_batch_size):
        batcher = Batcher(predict, max_batch_size, timeout_s=0.01, executor=ThreadPoolExecutor(2))
        inputs = [np.full((1 + i % 3, 2), i, dtype=np.float32) for i in range(40)]
        outputs = await asyncio.gather(*(batcher(x) for x in inputs))
        for x, y in zip(inputs, outputs):
            np.testing.assert_array_equal(y, x * 2)

    asyncio.run(main(16))
    assert sum(calls) == sum(1 + i % 3 for i in range(40)) and max(calls) <= 16 and len(calls) < 40
    calls.clear()
    asyncio.run(main(1))  # batching off: one call per request
    assert len(calls) == 40


def test_a_failing_model_call_fails_every_request_of_its_batch():
    from scaleflow.serving.batcher import Batcher

    def predict(x):
        raise RuntimeError("model exploded")

    async def main():
        batcher = Batcher(predict, 8, timeout_s=0.01, executor=ThreadPoolExecutor(1))
        return await asyncio.gather(*(batcher(np.zeros((1, 2))) for _ in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_drift_is_psi_per_feature_over_a_window_and_reported_once_per_window():
    from scaleflow.export.metadata import feature_stats
    from scaleflow.serving.drift import DriftMonitor

    rng = np.random.default_rng(0)
    stats = feature_stats(rng.normal(size=(4000, 2)))
    windows = []
    monitor = DriftMonitor(stats, ["age", "income"], window=500, threshold=0.2,
                           on_window=lambda scores, drifted: windows.append((scores, drifted)))
    monitor.observe(rng.normal(size=(500, 2)))  # same distribution
    monitor.observe(np.c_[rng.normal(size=(1000, 1)), rng.normal(4.0, 1.0, size=(1000, 1))])  # income moved
    assert len(windows) == 3
    assert windows[0][1] == [] and max(windows[0][0].values()) < 0.1
    assert windows[1][1] == windows[2][1] == ["income"] and windows[1][0]["income"] > 1.0


def servable(shape=(None, 3)):
    return SimpleNamespace(input_name="features", input_dtype="float32", input_shape=shape)


@pytest.mark.parametrize("body, message", [
    ({"instances": [[1, 2]]}, "expected shape [batch, 3], got [1, 2]"),
    ({"instances": [["4111-1111", 2, 3]]}, "expected numbers"),
    ({"instances": [[1, 2, 3], [1]]}, "different lengths"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, "exactly one of"),
    ({"instances": [{"other": [1, 2, 3]}]}, "exactly the input 'features'"),
    ({"inputs": {"a": [[1, 2, 3]], "b": [[1]]}}, "the one input 'features'"),
    ({"instances": "x"}, "non-empty list"),
    ({"instances": [[1e300, 2, 3]]}, "finite"),
])
def test_bad_bodies_are_named_without_their_values(body, message):
    from scaleflow.serving.tfserving import BadRequest, parse_predict

    with pytest.raises(BadRequest) as error:
        parse_predict(body, servable())
    assert message in str(error.value)
    assert "4111" not in str(error.value) and "1e+300" not in str(error.value)


def test_row_and_columnar_bodies_give_the_same_array():
    from scaleflow.serving.tfserving import format_predict, parse_predict

    rows, columnar = parse_predict({"instances": [{"features": [1, 2, 3]}, {"features": [4, 5, 6]}]}, servable())
    columns, is_columnar = parse_predict({"inputs": {"features": [[1, 2, 3], [4, 5, 6]]}}, servable())
    assert not columnar and is_columnar and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, columns)
    assert set(format_predict(rows, False)) == {"predictions"} and set(format_predict(rows, True)) == {"outputs"}
    named = {"scores": np.asarray([[0.2, 0.8], [0.9, 0.1]], np.float32), "class_name": np.asarray([b"dog", b"cat"], object)}
    by_row = format_predict(named, False)["predictions"]
    assert [r["class_name"] for r in by_row] == ["dog", "cat"] and np.allclose(by_row[0]["scores"], [0.2, 0.8])
    by_column = format_predict(named, True)["outputs"]
    assert by_column["class_name"] == ["dog", "cat"] and by_column["scores"].shape == (2, 2)


def test_warmup_records_are_tfrecord_framed_prediction_logs(tmp_path):
    from scaleflow.data.tfrecord_format import iter_records, write_records
    from scaleflow.export.warmup import prediction_log, request_inputs

    logs = [prediction_log("clf", {"features": b"tensor-%d" % i}) for i in range(3)]
    write_records(str(tmp_path / "w"), logs)
    assert [request_inputs(r) for r in iter_records(str(tmp_path / "w"))] == \
        [{"features": b"tensor-%d" % i} for i in range(3)]
    data = (tmp_path / "w").read_bytes()
    (tmp_path / "w").write_bytes(data[:9] + bytes([data[9] ^ 1]) + data[10:])  # the length's checksum
    with pytest.raises(ValueError, match="corrupt"):
        list(iter_records(str(tmp_path / "w")))


def test_serve_keys_are_checked_with_did_you_mean():
    from scaleflow.cli import compose
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'workers'"):
        compose(["mode=serve", "serve.worker=2"])
    with pytest.raises(ConfigError, match=r"serve.max_batch_size=0: expected a number >= 1"):
        compose(["mode=serve", "serve.max_batch_size=0"])
