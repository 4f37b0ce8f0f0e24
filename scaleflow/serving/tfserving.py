"""TensorFlow Serving's REST predict bodies, to and from arrays (so existing clients work unchanged).

    row:      {"signature_name": "serving_default", "instances": [[...], [...]]}   -> {"predictions": [...]}
              (an instance may also be {"<input name>": [...]})
    columnar: {"inputs": [[...], [...]]}  or  {"inputs": {"<input name>": [[...], ...]}} -> {"outputs": [...]}

Every problem is a `BadRequest` whose message says what is wrong with the body's structure, shape or
type and never quotes its values (they may be personal data; messages end up in logs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

SIGNATURE = "serving_default"


class BadRequest(ValueError):
    """A request TF Serving would answer with 400 INVALID_ARGUMENT."""


def parse_json(body: bytes) -> dict:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        # orjson's message gives the position only ("unexpected character: line 1 column 9 (char 8)").
        raise BadRequest(f"JSON Parse error: {str(e).splitlines()[0]}") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"JSON Value: the request body must be a JSON object, got a JSON {_kind(payload)}")
    return payload


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def parse_predict(payload: dict, servable) -> tuple[np.ndarray, bool]:
    """(input rows as the signature's dtype, columnar?) of a predict body for `servable`."""
    signature = payload.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise BadRequest(f"Serving signature name: \"{str(signature)[:64]}\" not found in signature def "
                         f"(this model has {SIGNATURE})")
    has_rows, has_columns = "instances" in payload, "inputs" in payload
    if has_rows == has_columns:
        raise BadRequest("Missing 'inputs' or 'instances' key" if not has_rows else
                         "Request body must have exactly one of 'instances' (row format) or 'inputs' (columnar)")
    key = "instances" if has_rows else "inputs"
    data = payload[key]
    name = servable.input_name
    if has_rows and isinstance(data, list) and data and all(isinstance(i, dict) for i in data):
        if any(set(i) != {name} for i in data):
            raise BadRequest(f"instances: every named instance must have exactly the input {name!r}")
        data = [i[name] for i in data]
    elif has_columns and isinstance(data, dict):
        if set(data) != {name}:
            raise BadRequest(f"inputs: expected the one input {name!r}, got {len(data)} named input(s)")
        data = data[name]
    if not isinstance(data, list) or not data:
        raise BadRequest(f"{key} must be a non-empty list of records, got a JSON {_kind(data)}"
                         + (" (empty)" if isinstance(data, list) else ""))
    return to_array(key, data, servable), has_columns


def to_array(key: str, data: list, servable) -> np.ndarray:
    expected = _shape_text(servable.input_shape)
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise BadRequest(f"{key}: records must be rectangular lists of numbers of shape {expected}; "
                         "they have different lengths") from None
    if raw.dtype.kind not in "biuf":
        raise BadRequest(f"{key}: expected numbers ({servable.input_dtype}) of shape {expected}; got values of "
                         f"JSON type {'string' if raw.dtype.kind in 'US' else 'mixed/null/object'}")
    shape = servable.input_shape
    if raw.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape, raw.shape)):
        raise BadRequest(f"{key}: expected shape {expected}, got {list(raw.shape)}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: refused below
            x = raw.astype(servable.input_dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"{key}: values do not fit {servable.input_dtype}") from None
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise BadRequest(f"{key}: values must be finite {servable.input_dtype} numbers")
    return x


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join("batch" if i == 0 and d is None else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + "]"


def format_predict(outputs, columnar: bool) -> dict:
    """TF Serving's response body for one output (an array) or several (a dict of arrays):

        row, one output:        {"predictions": [row, row, ...]}
        row, several:           {"predictions": [{"scores": row, "class_name": "cat"}, ...]}
        columnar, one output:   {"outputs": [row, row, ...]}
        columnar, several:      {"outputs": {"scores": [row, ...], "class_name": ["cat", ...]}}
    """
    if not isinstance(outputs, dict):
        return {"outputs" if columnar else "predictions": json_ready(outputs)}
    if len(outputs) == 1:
        return format_predict(next(iter(outputs.values())), columnar)
    if columnar:
        return {"outputs": {name: json_ready(value) for name, value in outputs.items()}}
    columns = {name: json_ready(value) for name, value in outputs.items()}
    columns = {name: value.tolist() if isinstance(value, np.ndarray) else value for name, value in columns.items()}
    count = len(next(iter(columns.values())))
    return {"predictions": [{name: value[i] for name, value in columns.items()} for i in range(count)]}


def json_ready(value):
    """A numeric array as is (orjson writes it); strings (TensorFlow gives bytes) as a list of str."""
    value = np.asarray(value)
    if value.dtype.kind in "OSU":
        return np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
                            otypes=[object])(value).tolist() if value.size else value.tolist()
    return np.ascontiguousarray(value)
