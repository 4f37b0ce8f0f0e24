"""CSV files as people have them: ids, string columns, empty cells, bad lines.

Every problem is found while the config is validated (NumPy only, before TensorFlow starts) and named
by file, line, record and column; string columns are ignored or encoded as categories fitted on the
training split only; missing values are imputed as `data.missing` says, and run.json records it
(trained for real in test_evaluate_predict.py's module fixture, which also checks run.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import cli, compose
from scaleflow.data.sharding import split_indices
from scaleflow.errors import ConfigError, DataError

N = 240


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def mixed_csv(path: Path, n: int = N, seed: int = 0) -> Path:
    """id (string key), x1 (informative), x2 (some cells empty), color (categorical, informative), label."""
    rng = np.random.default_rng(seed)
    lines = ["id,x1,x2,color,label"]
    for i in range(n):
        c = int(rng.integers(0, 3))
        x2 = "" if i % 17 == 0 else f"{rng.normal():.3f}"
        lines.append(f"r{i},{rng.normal() + 2 * c:.3f},{x2},{['red', 'green', 'blue'][c]},{c}")
    return write(path, "\n".join(lines) + "\n")


def csv_config(path: Path, *overrides: str):
    return compose("data=csv", f"data.path={path}", *overrides)


@pytest.mark.parametrize("text, overrides, where, problem", [
    ("a,b,label\n1,2,0\n3,4\n", [], "line 3 (record 1)", "2 field(s) where the header has 3 columns"),
    ("a,b,label\n", [], "line 1", "the header has no records under it"),
    ("", [], "", "the file is empty"),
    ("a,b,label\n1,2,0\n3,,1\n", [], "line 3 (record 1), column 'b'", "empty cell"),
    ("a,b,label\n1,2,0\n3,NaN,1\n", [], "line 3 (record 1), column 'b'", "missing value 'NaN'"),
    ("a,b,label\n1,2,0\n3,-inf,1\n", ["data.missing=mean"], "line 3 (record 1), column 'b'",
     "'-inf' is not a finite number"),
    ("a,b,label\n1,2,0\n3,4,\n", [], "line 3 (record 1), column 'label'", "no label"),
    ("a,b,label\n1,x,0\n3,4,1\n5,6,1\n", [], "line 2 (record 0), column 'b'",
     "'x' is not a number. List it in data.categorical_columns"),
    ("a,a,label\n1,2,0\n", [], "line 1", "column 'a' appears twice"),
])
def test_bad_csv_is_a_data_error_naming_file_line_and_column(tmp_path, text, overrides, where, problem):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as e:
        csv_config(path, *overrides)
    assert str(e.value).startswith(f"{path}{' ' if where else ''}{where}: {problem}")


def test_only_the_non_numeric_column_is_named_with_how_to_fix_it(tmp_path):
    path = mixed_csv(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"line 2 \(record 0\), column 'id': 'r0' is not a number\. It looks like an "
                                        r"identifier .* data.ignore_columns or name it data.shard_key"):
        csv_config(path)
    with pytest.raises(DataError, match=r"column 'color': 'blue' is not a number\. List it in "
                                        r"data.categorical_columns"):
        csv_config(path, "data.ignore_columns=[id]", "data.missing=zero")


@pytest.mark.parametrize("overrides, key, hint", [
    (["data.categorical_columns=[colr]"], "data.categorical_columns", "Did you mean 'color'?"),
    (["data.shard_key=id", "data.feature_columns=[id,x1]"], "data.feature_columns", "never a feature"),
    (["data.ignore_columns=[color]", "data.categorical_columns=[color]"], "data.categorical_columns", "ignored"),
    (["data.ignore_columns=[id]", "data.categorical_columns=[x1]", "data.max_categories=10", "data.missing=zero"],
     "data.categorical_columns", "an identifier?"),
])
def test_column_roles_are_checked_against_the_header(tmp_path, overrides, key, hint):
    with pytest.raises(ConfigError) as e:
        csv_config(mixed_csv(tmp_path / "d.csv"), *overrides)
    assert e.value.key == key and hint in str(e.value)


def test_categories_come_from_the_training_split_and_missing_cells_are_imputed(tmp_path):
    from scaleflow.data.csv import CSV

    path = mixed_csv(tmp_path / "d.csv")
    train, val = split_indices(N, 0.1, 0)
    lines = path.read_text().splitlines()
    fields = lines[1 + int(val[0])].split(",")
    lines[1 + int(val[0])] = ",".join(fields[:3] + ["purple"] + fields[4:])  # only in validation
    path.write_text("\n".join(lines) + "\n")
    cfg = csv_config(path, "data.shard_key=id", "data.categorical_columns=[color]", "data.missing=mean")
    encoding, x, _, report = CSV().prepare(cfg.data)
    assert encoding.columns == ["x1", "x2", "color"] and encoding.ignored == ["id"]
    assert encoding.categorical == {"color": ["blue", "green", "red"]}  # no 'purple'
    assert encoding.feature_names == ["x1", "x2", "color=blue", "color=green", "color=red"]
    assert report["unknown_categories"] == {"color": 1} and not x[val[0], 2:].any()
    x2 = np.array([float(line.split(",")[2]) if line.split(",")[2] else np.nan for line in lines[1:]])
    assert encoding.fill["x2"] == pytest.approx(np.nanmean(x2[train]), rel=1e-6)  # training split only
    assert x[0, 1] == pytest.approx(encoding.fill["x2"]) and report["imputed"] == {"x2": 15}
    zero, _, _, _ = CSV().prepare(csv_config(path, "data.shard_key=id", "data.categorical_columns=[color]",
                                             "data.missing=zero").data)
    assert zero.fill == {"x2": 0.0}


def test_cli_names_the_bad_cell_in_one_line_with_exit_status_2(tmp_path):
    path = write(tmp_path / "ragged.csv", "a,b,label\n1,2,0\n3,4\n")
    result = cli("data=csv", f"data.path={path}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"scaleflow: data error: {path} line 3 (record 1): 2 field(s) where the header "
                                     "has 3 columns. Every line needs one field per column (data.delimiter=','); "
                                     "quote values that contain the delimiter")
    assert not (tmp_path / "outputs").exists()  # nothing started
