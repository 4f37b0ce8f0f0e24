"""TensorFlow Serving's warm-up file: `<version>/assets.extra/tf_serving_warmup_requests`.

A TFRecord file of `tensorflow.serving.PredictionLog` protos, each holding a `PredictRequest` for the
`serving_default` signature. TF Serving replays them before it marks a version AVAILABLE (so the
first real request does not pay for graph tracing); `mode=serve` does the same.

The PredictionLog/PredictRequest wrappers are encoded here by hand (protobuf wire format, four fields)
rather than with `tensorflow-serving-api`, whose wheel depends on the full `tensorflow` package and
would replace `tensorflow-cpu`. The tensors inside are TensorFlow's own `TensorProto`:

    PredictionLog  { PredictLog predict_log = 6; }
    PredictLog     { PredictRequest request = 1; }
    PredictRequest { ModelSpec model_spec = 1; map<string, TensorProto> inputs = 2; }
    ModelSpec      { string name = 1; string signature_name = 3; }

Example:
    write_warmup(directory, "mlp", "keras_tensor", [x[:1], x[:8]])   # exporter side (TensorFlow)
    for inputs in read_warmup(directory): predict(inputs["keras_tensor"])   # server side
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from scaleflow.data.tfrecord_format import _fields as protobuf_fields
from scaleflow.data.tfrecord_format import iter_records, write_records

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
SIGNATURE = "serving_default"
MAX_RECORDS = 1000  # TF Serving replays at most this many


# ------------------------------------------------------------------------------- protobuf wire
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _fields(message: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of a message: the pure-Python protobuf reader the TFRecord code uses."""
    for number, _wire, value in protobuf_fields(message):
        yield number, value


def prediction_log(model_name: str, inputs: dict[str, bytes]) -> bytes:
    """A serialized PredictionLog for `inputs` ({input name: serialized TensorProto})."""
    spec = _field(1, model_name.encode()) + _field(3, SIGNATURE.encode())
    request = _field(1, spec) + b"".join(_field(2, _field(1, name.encode()) + _field(2, tensor))
                                         for name, tensor in inputs.items())
    return _field(6, _field(1, request))


def request_inputs(log: bytes) -> dict[str, bytes]:
    """{input name: serialized TensorProto} of a PredictionLog's predict request ({} for other logs)."""
    inputs: dict[str, bytes] = {}
    for number, predict_log in _fields(log):
        if number != 6:
            continue
        for n, request in _fields(predict_log):
            if n != 1:
                continue
            for m, entry in _fields(request):
                if m == 2:
                    parts = dict(_fields(entry))
                    inputs[bytes(parts.get(1, b"")).decode()] = bytes(parts.get(2, b""))
    return inputs


# ------------------------------------------------------------------------------ the two sides
def write_warmup(directory: str, model_name: str, input_name: str, batches: list[np.ndarray]) -> str:
    """Write one PredictionLog per batch (TensorFlow needed for the TensorProto); returns the path."""
    import tensorflow as tf

    path = os.path.join(directory, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    logs = [prediction_log(model_name, {input_name: tf.make_tensor_proto(np.asarray(b)).SerializeToString()})
            for b in batches[:MAX_RECORDS]]
    write_records(path, logs)
    return path


def read_warmup(directory: str) -> Iterator[dict[str, np.ndarray]]:
    """{input name: array} of every warm-up request stored with the export (none when absent)."""
    path = os.path.join(directory, WARMUP_PATH)
    if not os.path.isfile(path):
        return
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    for i, record in enumerate(iter_records(path)):
        if i >= MAX_RECORDS:
            return
        yield {name: tf.make_ndarray(tensor_pb2.TensorProto.FromString(tensor))
               for name, tensor in request_inputs(record).items()}
