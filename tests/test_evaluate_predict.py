"""mode=evaluate and mode=predict: a finished run or an export, on the run's data or any other.

One small CSV model (ids, a categorical column, imputed cells) is trained once for the module; each
test evaluates or predicts with it in this process (one TensorFlow import), except the command-line
checks, which must fail before TensorFlow starts.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, compose
from scaleflow.data.sharding import split_indices
from scaleflow.errors import ConfigError, DataError
from test_csv_data import mixed_csv

N = 400
TRAIN = ["data=csv", "data.shard_key=id", "data.categorical_columns=[color]", "data.missing=mean",
         "data.batch_size=32", "trainer.epochs=4", "trainer.learning_rate=0.02", "model.hidden_units=[16]"]


@pytest.fixture(scope="module")
def trained(tf, tmp_path_factory):
    """(run dir, export version dir, training CSV) of a finished run."""
    from scaleflow.training.train import run

    root = tmp_path_factory.mktemp("trained")
    path = mixed_csv(root / "train.csv", n=N)
    run_dir = root / "run"
    run(compose(*TRAIN, f"data.path={path}"), str(run_dir))
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "ok"
    return run_dir, Path(manifest["export"]["path"]), path, manifest


def test_categorical_and_imputed_csv_trains_for_real_and_run_json_records_it(trained):
    *_, manifest = trained
    assert manifest["config"]["data"]["missing"] == "mean"
    encoding = manifest["data"]["encoding"]
    assert encoding["missing"] == "mean" and encoding["imputed"] == {"x2": 24} and "x2" in encoding["fill"]
    assert encoding["categorical"] == {"color": ["blue", "green", "red"]} and encoding["ignored"] == ["id"]
    assert manifest["data"]["input_shape"] == [5]
    assert manifest["metrics"]["final"]["val_accuracy"] > 0.8  # color alone gives the class


def evaluate(*overrides: str, out: Path) -> dict:
    from scaleflow.modes import evaluate as mode

    mode.run(compose("mode=evaluate", *overrides), str(out))
    return json.loads((out / "evaluation.json").read_text())


def predict(*overrides: str, out: Path) -> dict:
    from scaleflow.modes import predict as mode

    return mode.run(compose("mode=predict", *overrides), str(out))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_a_run_dir_on_its_own_data_writes_metrics_and_confusion_matrix(trained, tmp_path):
    run_dir, *_ = trained
    report = evaluate(f"run={run_dir}", out=tmp_path)
    assert report["data"]["records"] == N and report["data"]["name"] == "csv"
    assert report["metrics"]["accuracy"] > 0.8 and report["metrics"]["loss"] > 0
    matrix = json.loads((tmp_path / "confusion_matrix.json").read_text())
    assert matrix["labels"] == ["0", "1", "2"] and np.sum(matrix["matrix"]) == N
    assert np.trace(matrix["matrix"]) / N == pytest.approx(report["metrics"]["accuracy"])
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    validation = evaluate(f"run={run_dir}", "evaluate.split=validation", out=tmp_path / "val")
    assert validation["data"]["records"] == len(split_indices(N, 0.1, 0)[1])


def test_evaluate_an_export_on_new_data_equals_the_run_dir(trained, tmp_path):
    run_dir, export, *_ = trained
    other = mixed_csv(tmp_path / "test.csv", n=150, seed=1)
    by_run = evaluate(f"run={run_dir}", f"data.path={other}", out=tmp_path / "a")
    by_export = evaluate(f"model_dir={export}", "data=csv", f"data.path={other}", out=tmp_path / "b")
    assert by_run["data"]["records"] == by_export["data"]["records"] == 150
    assert by_run["metrics"] == pytest.approx(by_export["metrics"])
    assert by_export["model"]["identity"]["version"] == 1


def test_predict_without_the_label_column_writes_keys_class_names_and_scores(trained, tmp_path):
    run_dir, export, train_csv, _ = trained
    rows = [line.split(",") for line in train_csv.read_text().splitlines()]
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("\n".join(",".join(r[:4]) for r in rows[:61]) + "\n")  # id,x1,x2,color: 60 records
    result = predict(f"run={run_dir}", f"data.path={unlabelled}", out=tmp_path)
    out = read_csv(tmp_path / "predictions.csv")
    assert [r["index"] for r in out] == [str(i) for i in range(60)] and [r["id"] for r in out] == [r[0] for r in rows[1:61]]
    assert list(out[0]) == ["index", "id", "predicted", "score", "score_0", "score_1", "score_2"]
    for r in out:
        scores = [float(r[f"score_{c}"]) for c in "012"]
        assert sum(scores) == pytest.approx(1, abs=1e-5) and r["predicted"] == str(int(np.argmax(scores)))
    truth = [r[4] for r in rows[1:61]]
    assert np.mean([r["predicted"] == t for r, t in zip(out, truth)]) > 0.75
    summary = json.loads((tmp_path / "predictions.json").read_text())
    assert result["data"]["records"] == 60 and summary["output"] and summary["data"]["unused_columns"] == []

    blank = tmp_path / "blank.csv"  # the label column is there, but empty: still nothing to read
    blank.write_text("\n".join([",".join(rows[0])] + [",".join(r[:4]) + "," for r in rows[1:61]]) + "\n")
    predict(f"run={run_dir}", f"data.path={blank}", out=tmp_path / "blank")
    assert read_csv(tmp_path / "blank" / "predictions.csv") == out

    parquet = predict(f"model_dir={export}", "data=csv", f"data.path={unlabelled}", "predict.format=parquet",
                      out=tmp_path / "pq")
    import pyarrow.parquet as pq

    table = pq.read_table(parquet["output"]).to_pydict()
    assert table["index"] == list(range(60)) and table["predicted"] == [r["predicted"] for r in out]


def test_predict_over_two_pipelines_is_an_exact_partition(trained, tmp_path):
    """Each pipeline predicts the part the shard planner gives it; together: every record once."""
    from scaleflow.inference.source import inference_data, resolve, selected_records
    from scaleflow.modes.predict import join_parts, part_path, partition, predict_part, write_table

    run_dir, *_ = trained
    cfg = compose("mode=predict", f"run={run_dir}", "data.shard=hash")
    source = resolve(cfg)
    data = inference_data(cfg, source, labelled=False)
    records = selected_records("all", data, source, "predict.split")
    parts = partition(data, records, 2)
    assert all(len(p) for p in parts) and sum(map(len, parts)) == N
    output = str(tmp_path / "predictions.csv")
    for p, mine in enumerate(parts):
        write_table(part_path(output, p, 2), predict_part(source, data, mine, 32), "csv")
    counts, _ = join_parts(output, "csv", records, 2)
    assert counts == [len(p) for p in parts]
    joined = read_csv(Path(output))
    assert [int(r["index"]) for r in joined] == list(range(N))
    single = predict(f"run={run_dir}", out=tmp_path / "one")
    assert [r["predicted"] for r in read_csv(Path(single["output"]))] == [r["predicted"] for r in joined]
    # A lost part is refused, not joined.
    write_table(part_path(output, 0, 2), predict_part(source, data, parts[0], 32), "csv")
    write_table(part_path(output, 1, 2), predict_part(source, data, parts[1][1:], 32), "csv")
    with pytest.raises(Exception, match=r"do not partition the records \(predicted twice: \[\], missed: \["):
        join_parts(output, "csv", records, 2)


def test_bad_model_or_data_is_a_config_error_before_tensorflow(trained, tmp_path):
    run_dir, export, train_csv, _ = trained
    cases = [
        (["mode=predict", f"run={tmp_path / 'nope'}"], "run", "Nothing exists at that path"),
        (["mode=evaluate", f"run={tmp_path}"], "run", "No readable run.json"),
        (["mode=predict", f"model_dir={export.parent}"], "model_dir", "It holds versions 1"),
        (["mode=predict"], "run", "mode=predict needs a trained model"),
        (["mode=predict", f"run={run_dir}", f"model_dir={export}"], "model_dir", "Name the model once"),
        (["mode=train", f"run={run_dir}"], "run", "names the model of mode=evaluate or mode=predict"),
        (["mode=predict", f"model_dir={export}", "data=synthetic", "data.num_features=7"], "data", "was trained on [5]"),
        (["mode=predict", f"model_dir={export}", "data.num_features=7"], "data.num_features", "a key of data"),
    ]
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(export, tampered)
    with open(tampered / "saved_model.pb", "ab") as f:
        f.write(b"\0")
    cases.append((["mode=predict", f"model_dir={tampered}"], "model_dir", "changed file saved_model.pb"))
    for overrides, key, hint in cases:
        with pytest.raises(ConfigError) as e:
            compose(*overrides)
        assert e.value.key == key and hint in str(e.value), (overrides, str(e.value))
    different = tmp_path / "different.csv"
    different.write_text("\n".join(",".join(line.split(",")[:2] + line.split(",")[3:4])
                                   for line in train_csv.read_text().splitlines()) + "\n")  # no x2
    with pytest.raises(DataError, match=r"no column 'x2', which the model was trained on"):
        compose("mode=predict", f"run={run_dir}", f"data.path={different}")
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("\n".join(",".join(line.split(",")[:4]) for line in train_csv.read_text().splitlines()))
    with pytest.raises(ConfigError, match="data.label_column='label'"):
        compose("mode=evaluate", f"run={run_dir}", f"data.path={unlabelled}")


PROBE = """
import sys
from scaleflow.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    print("EXIT=%s" % e.code, file=sys.stderr)
print("TENSORFLOW_IMPORTED=%s" % ("tensorflow" in sys.modules), file=sys.stderr)
"""


def test_cli_refuses_data_that_differs_from_training_in_one_line_without_tensorflow(trained, tmp_path):
    run_dir, _, train_csv, _ = trained
    different = tmp_path / "different.csv"
    different.write_text(train_csv.read_text().replace("color", "colour", 1))
    result = subprocess.run([sys.executable, "-c", PROBE, "mode=predict", f"run={run_dir}", f"data.path={different}",
                             f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    lines = result.stderr.strip().splitlines()
    assert lines == [f"scaleflow: data error: {different}: no column 'color', which the model was trained on (its "
                     "feature columns: x1, x2, color). Predict on data with the columns of the training data",
                     "EXIT=2", "TENSORFLOW_IMPORTED=False"], result.stderr[-2000:]


@pytest.mark.slow
def test_predict_under_multi_worker_writes_every_record_once(trained, tmp_path):
    run_dir, *_ = trained
    result = cli("mode=predict", f"run={run_dir}", "strategy=multi_worker", "strategy.num_workers=2",
                 "data.shard=hash", f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "predictions.json").read_text())
    assert [p["records"] for p in summary["parts"]] != [N, 0] and sum(p["records"] for p in summary["parts"]) == N
    rows = read_csv(tmp_path / "predictions.csv")
    assert [int(r["index"]) for r in rows] == list(range(N))
    assert not list(tmp_path.glob("predictions.csv.part-*"))


@pytest.mark.parametrize("task, data, check", [
    ("binary", [], lambda m: m["auc"] > 0.95 and m["accuracy"] > 0.9),
    ("multilabel", ["data.num_classes=3"], lambda m: m["label_accuracy"] > 0.8 and m["micro_f1"] > 0.6),
    ("regression", ["data.targets=2"], lambda m: m["r2"] > 0.9),
])
def test_every_task_evaluates_and_predicts_in_its_own_terms(train, tmp_path, task, data, check):
    run = train(f"task={task}", "data.num_examples=500", "data.num_features=8", *data, "trainer.epochs=4",
                "trainer.learning_rate=0.02", "model.hidden_units=[32]", "data.batch_size=50",
                run_dir=tmp_path / "run")
    assert run["status"] == "ok"
    report = evaluate(f"run={tmp_path / 'run'}", "evaluate.split=validation", out=tmp_path / "eval")
    assert report["task"] == task and check(report["metrics"]), report["metrics"]
    assert (tmp_path / "eval" / "confusion_matrix.png").exists() == (task == "binary")
    result = predict(f"model_dir={run['export']['path']}", "data.num_examples=50", out=tmp_path / "pred")
    rows = read_csv(Path(result["output"]))
    assert len(rows) == 50 and [r["index"] for r in rows] == [str(i) for i in range(50)]
    columns = list(rows[0])
    if task == "binary":
        assert columns == ["index", "predicted", "score"] and {r["predicted"] for r in rows} <= {"0", "1"}
        assert report["confusion_matrix"]["labels"] == ["0", "1"]
    elif task == "multilabel":
        names = report["per_class"].keys()
        assert columns == ["index", "predicted", *[f"score_{n}" for n in names]]
        assert all(set(filter(None, r["predicted"].split("|"))) <= set(names) for r in rows)
    else:
        names = list(report["per_target"])
        assert len(names) == 2 and columns == ["index", *[f"prediction_{n}" for n in names]]
