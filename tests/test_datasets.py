"""Each built-in dataset describes itself without TensorFlow and trains for real on small files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose
from scaleflow import registry

N, FEATURES, CLASSES = 120, 4, 3


def make_points(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=N)
    x = (rng.normal(size=(N, FEATURES)) + 4 * np.eye(CLASSES, FEATURES)[y]).astype(np.float32)
    return x, y


def write_csv(path, x, y, label="species"):
    names = ["setosa", "versicolor", "virginica"]
    lines = [",".join([f"f{i}" for i in range(FEATURES)] + [label])]
    lines += [",".join([*(f"{v:.5f}" for v in row), names[c]]) for row, c in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")


def write_tfrecords(tf, directory, x, y, files=3):
    directory.mkdir()
    for f, part in enumerate(np.array_split(np.arange(N), files)):
        with tf.io.TFRecordWriter(str(directory / f"part-{f}.tfrecord")) as w:
            for i in part:
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
                    "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"r{i}".encode()]))}))
                w.write(ex.SerializeToString())


def write_images(tf, directory, y):
    rng = np.random.default_rng(1)
    for i, c in enumerate(y[:36]):
        d = directory / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        img = np.clip(rng.normal(60 + 60 * c, 20, size=(10, 12, 3)), 0, 255).astype(np.uint8)
        (d / f"img{i:03d}.png").write_bytes(tf.io.encode_png(img).numpy())


@pytest.fixture
def files(tf, tmp_path):
    x, y = make_points()
    write_csv(tmp_path / "iris.csv", x, y)
    np.savez(tmp_path / "data.npz", features=x, labels=y)
    write_tfrecords(tf, tmp_path / "records", x, y)
    write_images(tf, tmp_path / "images", y)
    return tmp_path, x, y


def overrides_for(kind, root):
    return {
        "csv": ["data=csv", f"data.path={root}/iris.csv", "data.label_column=species"],
        "npz": ["data=npz", f"data.path={root}/data.npz", "data.x_key=features", "data.y_key=labels"],
        "tfrecord": ["data=tfrecord", f"data.path={root}/records", "data.features={x: {shape: [4], dtype: float32}}"],
        "image_folder": ["data=image_folder", f"data.path={root}/images", "data.image_size=[8,8]"],
    }[kind]


@pytest.mark.parametrize("kind", ["csv", "npz", "tfrecord", "image_folder"])
def test_describe_and_read_agree(files, kind):
    root, x, y = files
    cfg = compose(*overrides_for(kind, root))
    dataset = registry.get("dataset", kind)()
    info = dataset.describe(cfg.data)
    features, labels = zip(*[(f.numpy(), int(l)) for f, l in dataset.read(cfg.data)])
    assert len(labels) == info.num_examples
    assert tuple(features[0].shape) == info.input_shape
    assert max(labels) < info.num_classes
    if kind != "image_folder":
        assert info.num_examples == N and info.num_classes == CLASSES
        np.testing.assert_allclose(np.stack(features), x, atol=1e-4)  # global record order is the file order
    else:
        assert info.input_shape == (8, 8, 3) and info.num_examples == 36


def test_tfrecord_keys_read_without_tensorflow(files):
    root, _, _ = files
    cfg = compose(*overrides_for("tfrecord", root))
    keys = registry.get("dataset", "tfrecord")().keys(cfg.data, "id")
    assert list(keys[:3]) == ["r0", "r1", "r2"] and len(keys) == N


def test_csv_string_labels_become_class_ids_and_bad_column_is_named(files):
    from scaleflow.errors import ConfigError

    root, _, y = files
    cfg = compose(*overrides_for("csv", root))
    _, labels = registry.get("dataset", "csv")().gather_arrays(cfg.data, np.arange(N))
    np.testing.assert_array_equal(labels, y)
    with pytest.raises(ConfigError, match="Did you mean 'species'"):  # found while validating the config
        compose(*overrides_for("csv", root)[:2], "data.label_column=specie")


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["csv", "npz", "tfrecord", "image_folder"])
def test_trains_on_each_dataset_kind(files, train, kind):
    root, _, _ = files
    model = ["model=cnn", "model.filters=[4]", "model.dense_units=8"] if kind == "image_folder" else \
        ["model.hidden_units=[16]"]
    run = train(*overrides_for(kind, root), *model, "data.batch_size=16", "trainer.epochs=2", "export=none")
    assert run["status"] == "ok"
    assert run["data"]["num_examples"] == (36 if kind == "image_folder" else N)


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_compressed_tfrecords_are_counted_as_tf_data_reads_them(tf, tmp_path, compression):
    from scaleflow.data.planning import plan_input

    x, y = make_points()
    directory = tmp_path / "records"
    directory.mkdir()
    sizes = (70, 50)
    for f, part in enumerate(np.split(np.arange(sum(sizes)), [sizes[0]])):
        with tf.io.TFRecordWriter(str(directory / f"part-{f}.tfrecord"), options=compression) as w:
            for i in part:
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])]))})).SerializeToString())
    cfg = compose("data=tfrecord", f"data.path={directory}", f"data.compression={compression}",
                  f"data.features={{x: {{shape: [{FEATURES}], dtype: float32}}}}", "data.batch_size=8")
    dataset = registry.get("dataset", "tfrecord")()
    info = dataset.describe(cfg.data)
    assert info.file_records == sizes and info.num_classes == int(y[:sum(sizes)].max()) + 1
    read = sum(1 for _ in dataset.read(cfg.data))
    assert read == info.num_examples  # the shard plan counts what tf.data reads
    plan = plan_input(dataset, cfg.data, info, 2, log_summary=False)
    assert sum(len(s) for s in plan.train.shards) + sum(len(s) for s in plan.validation.shards) == read
