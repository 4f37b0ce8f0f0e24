"""A bad data file is named (file, record) before training where the format allows, and a fault only a
full read finds is named when TensorFlow hits it: one line, never a traceback."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from conftest import cli, compose
from scaleflow import registry
from scaleflow.errors import DataError
from test_datasets import N, make_points, write_images, write_tfrecords

TFRECORD = ["data=tfrecord", "data.features={x: {shape: [4], dtype: float32}}"]


def describe(*overrides):
    cfg = compose(*overrides)
    return registry.get("dataset", cfg.data.name)().describe(cfg.data)


@pytest.fixture
def records(tf, tmp_path):
    x, y = make_points()
    write_tfrecords(tf, tmp_path / "records", x, y)
    return tmp_path / "records"


def test_a_truncated_tfrecord_is_named_with_its_record_before_training(records):
    part = records / "part-1.tfrecord"
    data = part.read_bytes()
    part.write_bytes(data[: len(data) - 30])  # cut inside the last record
    with pytest.raises(DataError) as e:
        describe(*TFRECORD, f"data.path={records}", "data.num_classes=3")
    assert "part-1.tfrecord" in str(e.value) and "record 39" in str(e.value) and "truncated" in str(e.value)


def test_a_tfrecord_cut_inside_a_header_is_named_not_a_struct_error(records):
    part = records / "part-0.tfrecord"
    part.write_bytes(part.read_bytes() + b"\x05\x00\x00")
    with pytest.raises(DataError, match=r"part-0.tfrecord: record 40 .*truncated"):
        describe(*TFRECORD, f"data.path={records}")


def test_a_file_that_is_not_a_tfrecord_is_named(records):
    (records / "notes.tfrecord").write_text("these are my notes, not records\n" * 3)
    with pytest.raises(DataError, match=r"notes.tfrecord: record 0 \(byte 0\): corrupt record header"):
        describe(*TFRECORD, f"data.path={records}", "data.num_classes=3")


def test_compressed_tfrecords_are_counted_and_a_truncated_one_is_named(records):
    for part in records.iterdir():
        part.write_bytes(gzip.compress(part.read_bytes()))
    info = describe(*TFRECORD, f"data.path={records}", "data.compression=GZIP")
    assert info.num_examples == N and info.num_classes == 3
    part = records / "part-2.tfrecord"
    part.write_bytes(part.read_bytes()[:-40])
    with pytest.raises(DataError, match="part-2.tfrecord: record"):
        describe(*TFRECORD, f"data.path={records}", "data.compression=GZIP")


def test_a_corrupt_payload_found_mid_epoch_names_file_and_record(records, train, tmp_path):
    """A flipped byte inside a float value passes every cheap check; TensorFlow's checksum finds it
    mid-epoch ("corrupted record at N", no file): the error names the file and record instead."""
    part = records / "part-2.tfrecord"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"part-2.tfrecord: record \d+ \(byte \d+\): corrupt record") as e:
        train(*TFRECORD, f"data.path={records}", "data.num_classes=3", "trainer.epochs=1", "export=none",
              "data.batch_size=20", "data.validation_split=0", "data.shuffle_buffer=0")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "failed" and "part-2.tfrecord" in run["error"]


def test_a_non_image_in_an_image_folder_is_named_before_training(tf, tmp_path):
    x, y = make_points()
    write_images(tf, tmp_path / "images", y)
    (tmp_path / "images" / "class_1" / "readme.png").write_text("not an image")
    with pytest.raises(DataError, match=r"class_1/readme.png: is not a PNG, JPEG, GIF or BMP image"):
        describe("data=image_folder", f"data.path={tmp_path}/images")
    (tmp_path / "images" / "class_1" / "readme.png").write_bytes(b"")
    with pytest.raises(DataError, match="an empty file"):
        describe("data=image_folder", f"data.path={tmp_path}/images")


def test_a_truncated_image_found_mid_epoch_is_named(tf, train, tmp_path):
    x, y = make_points()
    write_images(tf, tmp_path / "images", y)
    victim = sorted((tmp_path / "images" / "class_0").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])  # a PNG header, then nothing
    with pytest.raises(DataError, match=rf"{victim.name}: cannot be decoded as an image"):
        train("data=image_folder", f"data.path={tmp_path}/images", "data.image_size=[8,8]", "model=cnn",
              "trainer.epochs=1", "export=none", "data.batch_size=12")


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "is not a readable .npz archive"),
    (lambda p: p.write_bytes(open_npz_bytes()[:200]), "not a readable .npz archive|cannot be read"),
    (lambda p: np.save(p.with_suffix(""), np.zeros(3)) or p.with_suffix(".npy").rename(p),
     "a single .npy array"),
    (lambda p: np.savez(p.with_suffix(""), x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3)),
     "holds Python objects"),
    (lambda p: np.savez(p.with_suffix(""), x=np.array(["a", "b", "c"]), y=np.zeros(3)), "must be numeric"),
])
def test_npz_problems_are_named_data_errors(tmp_path, make, expected):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(DataError, match=expected):
        describe("data=npz", f"data.path={path}")


def open_npz_bytes() -> bytes:
    import io

    x, y = make_points()
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def test_a_bad_data_file_is_one_line_on_the_command_line(tmp_path):
    (tmp_path / "data.npz").write_text("hello")
    result = cli("data=npz", f"data.path={tmp_path}/data.npz", f"hydra.run.dir={tmp_path}/run", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "scaleflow: data error:" in result.stderr and "data.npz" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
