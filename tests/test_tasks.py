"""Tasks (`task=classification|binary|multilabel|regression`): each reads its labels, adds its head,
trains for real on small data under the default and the Mirrored strategy, and every bad label, loss
or metric is named before TensorFlow starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose
from scaleflow import registry
from scaleflow.errors import ConfigError
from scaleflow.tasks import keras_names
from scaleflow.tasks.labels import LabelError

CLASSIFICATION = registry.get("task", "classification")()


def data_config(*overrides):
    return compose(*overrides).data


# ------------------------------------------------------------------------------------- labels
def test_integer_like_labels_keep_their_values():
    targets = CLASSIFICATION.encode(np.array(["1", "2", "3", "2"]), data_config())
    assert targets.y.tolist() == [1, 2, 3, 2]  # not shifted to 0, 1, 2
    assert targets.class_names == ("0", "1", "2", "3")


@pytest.mark.parametrize("labels, value", [(["0", "1", "", "2"], "''"), (["0", "0.5", "1"], "'0.5'")])
def test_empty_or_fractional_label_is_an_error_naming_row_and_value(labels, value):
    with pytest.raises(LabelError) as info:
        CLASSIFICATION.encode(np.array(labels), data_config(), key="data.label_column",
                              where=lambda i: f"data row {i + 1} of x.csv")
    message = str(info.value)
    assert message.startswith(f"data.label_column={value}") and "data row" in message, message


def test_string_labels_are_sorted_or_follow_data_class_names():
    labels = np.array(["dog", "cat", "dog", "bird"])
    assert CLASSIFICATION.encode(labels, data_config()).class_names == ("bird", "cat", "dog")
    listed = CLASSIFICATION.encode(labels, data_config("data.class_names=[dog,cat,bird]"))
    assert listed.y.tolist() == [0, 1, 0, 2] and listed.class_names == ("dog", "cat", "bird")
    with pytest.raises(LabelError, match="'bird'.*not a listed class"):
        CLASSIFICATION.encode(labels, data_config("data.class_names=[dog,cat]"))


def test_one_class_or_more_than_max_classes_is_an_error():
    with pytest.raises(LabelError, match="at least 2 classes"):
        CLASSIFICATION.encode(np.array(["a", "a"]), data_config())
    with pytest.raises(LabelError, match="at most data.max_classes=5"):
        CLASSIFICATION.encode(np.arange(10), data_config("data.max_classes=5"))


def test_each_task_reads_its_targets():
    binary = registry.get("task", "binary")().encode(np.array(["no", "yes", "no"]), data_config())
    assert binary.y.shape == (3, 1) and binary.y[:, 0].tolist() == [0, 1, 0] and binary.class_names == ("no", "yes")
    with pytest.raises(LabelError, match="third class"):
        registry.get("task", "binary")().encode(np.array([0, 1, 2]), data_config())
    multi = registry.get("task", "multilabel")().encode(np.array(["a|b", "", "c"]), data_config())
    assert multi.y.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]] and multi.class_names == ("a", "b", "c")
    regression = registry.get("task", "regression")()
    targets = regression.encode(np.array([["1.5", "2"], ["3", "4"]]), data_config(), names=["price", "area"])
    assert targets.y.dtype == np.float32 and targets.target_names == ("price", "area")
    with pytest.raises(LabelError, match="data row 2"):
        regression.encode(np.array(["1.5", "n/a"]), data_config(), where=lambda i: f"data row {i + 1}")


def test_csv_labels_are_checked_with_the_config_before_training(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0.5\n")
    with pytest.raises(ConfigError, match=r"data.label_column='0.5': .*d.csv line 4 \(record 2\)"):
        compose("data=csv", f"data.path={path}")
    path.write_text("a,b,label\n1,2,1.5\n3,4,2.5\n5,6,0.5\n")
    assert compose("data=csv", f"data.path={path}", "task=regression").task == "regression"


# ------------------------------------------------------------------------ loss and metric names
@pytest.mark.parametrize("overrides, key, expect", [
    (["trainer.loss=binary_crossentropy"], "trainer.loss", "binary_crossentropy fits task=binary or task=multilabel"),
    (["task=regression", "trainer.loss=sparse_categorical_crossentropy"], "trainer.loss", "a loss for task=regression"),
    (["trainer.loss=mean_sqared_error"], "trainer.loss", "Did you mean 'mean_squared_error'?"),
    (["task=binary", "trainer.metrics=[acuracy]"], "trainer.metrics", "Did you mean 'accuracy'?"),
    (["task=regression", "trainer.metrics=[accuracy]"], "trainer.metrics", "metrics for task=regression"),
    (["task=regresion"], "task", "Did you mean 'regression'?"),
    (["task=binary", "data.class_names=[a,b,c]"], "data.class_names", "two names"),
])
def test_bad_task_loss_or_metric_names_key_value_and_allowed(overrides, key, expect):
    with pytest.raises(ConfigError) as info:
        compose(*overrides)
    assert str(info.value).startswith(key) and expect in str(info.value), str(info.value)


def test_cli_bad_loss_exits_2_before_tensorflow(tmp_path):
    probe = ("import sys\nfrom scaleflow.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print('EXIT=%s TF=%s' % (e.code, 'tensorflow' in sys.modules), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe, "task=regression", "trainer.loss=binary_crossentropy",
                             f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "EXIT=2 TF=False" in result.stderr, result.stderr[-2000:]
    assert "trainer.loss='binary_crossentropy'" in result.stderr


def test_static_keras_name_lists_match_installed_keras(tf):
    import keras
    from keras.src.losses import ALL_OBJECTS_DICT as losses
    from keras.src.metrics import ALL_OBJECTS_DICT as metrics

    def snake(names):
        return {n for n in names if n == n.lower()} - set(keras_names.NOT_CONFIGURABLE)

    assert set(keras_names.LOSSES) == snake(losses)
    assert set(keras_names.METRICS) == snake(metrics)
    for name in keras_names.LOSSES:
        assert keras.losses.get(name) is not None
    for task in registry.names("task"):
        t = registry.get("task", task)
        assert set(t.losses) <= set(keras_names.LOSSES) and t.loss in t.losses
        assert set(t.metrics) <= set(t.allowed_metrics) <= set(keras_names.METRICS)


# --------------------------------------------------------------------------------------- models
def test_legacy_plugin_that_builds_the_whole_model_follows_the_task(tf):
    from scaleflow.models.base import InputSpec, Model, classifier_head

    class Legacy(Model):  # written before tasks: build() ending in classifier_head
        name = "legacy"

        def build(self, config, spec):
            import keras

            inputs = keras.Input(spec.input_shape)
            return keras.Model(inputs, classifier_head(keras.layers.Dense(4)(inputs), spec))

    for task, units, activation in [("classification", 3, "softmax"), ("binary", 1, "sigmoid")]:
        model = registry.get("task", task)().build_model(Legacy(), None, InputSpec((5,), units, task=task))
        assert model.outputs[0].shape[-1] == units and model.layers[-1].activation.__name__ == activation


# ------------------------------------------------------------------------- real training runs
QUICK = ["data.num_examples=1024", "data.batch_size=32", "model.hidden_units=[32]", "trainer.learning_rate=0.02",
         "trainer.epochs=5"]
STRATEGIES = {"default": ["strategy=default"], "mirrored": ["strategy=mirrored", "hardware.logical_devices=2",
                                                            "export=none"]}


def majority_accuracy(task, *overrides):
    """Validation accuracy of always predicting the most frequent class (per label for multilabel)."""
    from scaleflow.tasks import dataset_for

    cfg = compose(f"task={task}", *overrides)
    _, y = dataset_for(cfg)._arrays(cfg.data)
    y = y.reshape(len(y), -1)
    positive = y.mean(axis=0)
    return float(np.mean(np.maximum(positive, 1 - positive)))


@pytest.mark.integration
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("task, extra", [("regression", ["data.targets=2"]), ("binary", []),
                                         ("multilabel", ["data.num_classes=5"])])
def test_each_task_learns_on_small_data(train, tf, task, extra, strategy):
    metrics = ["trainer.metrics=[accuracy]"] if strategy != "default" and task != "regression" else []  # AUC is slow
    run = train(f"task={task}", *QUICK, *extra, *STRATEGIES[strategy], *metrics)
    assert run["status"] == "ok" and run["task"] == task
    final = run["metrics"]["final"]
    if task == "regression":
        assert final["val_r2_score"] >= 0.95, final
        assert run["data"]["target_names"] == ["target_0", "target_1"]
    else:
        baseline = majority_accuracy(task, *QUICK, *extra)
        assert final["val_accuracy"] >= baseline + 0.15, (final, baseline)
        assert strategy != "default" or final["val_auc"] > 0.9, final
        assert run["data"]["class_names"] == (["0", "1"] if task == "binary" else [f"label_{j}" for j in range(5)])
    if strategy == "default":  # the export answers with names, verified on reload and again here
        assert run["export"]["verified"]
        metadata = json.loads((Path(run["export"]["dir"]) / "scaleflow_export.json").read_text())["metadata"]
        assert metadata["task"] == task
        x = np.random.default_rng(0).normal(size=(8, 32)).astype(np.float32)
        out = tf.saved_model.load(run["export"]["path"]).signatures["serving_default"](features=tf.constant(x))
        if task == "regression":
            assert set(out) == {"targets", "target_0", "target_1"} and metadata["target_names"] == ["target_0", "target_1"]
            np.testing.assert_allclose(out["target_1"].numpy(), out["targets"].numpy()[:, 1])
        else:
            names = metadata["class_names"]
            top = np.argmax(out["scores"].numpy(), axis=1) if task == "multilabel" else out["class_id"].numpy()
            assert [n.decode() for n in out["class_name"].numpy()] == [names[i] for i in top]


def test_csv_multilabel_strings_and_binary_names(tmp_path):
    from scaleflow.tasks import dataset_for

    path = tmp_path / "t.csv"
    path.write_text("a,b,topics,churned\n1,2,sports|tech,yes\n3,4,,no\n5,6,tech,no\n")
    cfg = compose("task=multilabel", "data=csv", f"data.path={path}", "data.label_column=topics",
                  "data.ignore_columns=[churned]", "data.validation_split=0")
    info = dataset_for(cfg).describe(cfg.data)  # an empty cell is a record without labels
    assert info.class_names == ("sports", "tech") and info.num_classes == 2
    cfg = compose("task=binary", "data=csv", f"data.path={path}", "data.label_column=churned",
                  "data.ignore_columns=[topics]", "data.validation_split=0")
    dataset = dataset_for(cfg)
    assert dataset.describe(cfg.data).class_names == ("no", "yes")
    assert dataset.gather_arrays(cfg.data, np.arange(3))[1][:, 0].tolist() == [1, 0, 0]
