"""mode=explain: attributions a person can read, checked against ground truth. On a dataset whose
label depends on two known features only, both methods rank those two first; class-conditional
rankings, a plain-language summary and a chart are written; images get saliency overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import compose

INFORMATIVE = ("f2", "f5")


def planted_csv(path: Path, n: int = 600, features: int = 8, seed: int = 0) -> Path:
    """label = 1 when f2 + f5 > 0: every other column is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = (x[:, 2] + x[:, 5] > 0).astype(int)
    lines = [",".join([f"f{i}" for i in range(features)] + ["label"])]
    lines += [",".join(f"{v:.5f}" for v in row) + f",{label}" for row, label in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tf, tmp_path_factory):
    from scaleflow.training.train import run

    root = tmp_path_factory.mktemp("explain")
    run_dir = root / "run"
    run(compose("data=csv", f"data.path={planted_csv(root / 'planted.csv')}", "data.batch_size=32",
                "trainer.epochs=8", "trainer.learning_rate=0.02", "model.hidden_units=[16]"), str(run_dir))
    return run_dir


def explain(*overrides: str, out: Path) -> dict:
    from scaleflow.modes import explain as mode

    mode.run(compose("mode=explain", *overrides), str(out))
    return json.loads((out / "explain.json").read_text())


def test_the_features_the_label_depends_on_rank_first_by_both_methods(trained, tmp_path):
    result = explain(f"run={trained}", out=tmp_path)
    by_ig = [f["feature"] for f in result["features"]]
    by_permutation = [f["feature"] for f in sorted(result["features"], key=lambda f: -f["permutation_drop"])]
    assert set(by_ig[:2]) == set(INFORMATIVE), by_ig
    assert set(by_permutation[:2]) == set(INFORMATIVE), by_permutation
    assert result["integrated_gradients"]["completeness_gap"] < 0.05  # attributions add up to the output
    assert result["permutation"]["metric"] == "accuracy" and result["permutation"]["baseline"] > 0.8
    # Class-conditional: each predicted class has its own ranking, led by the informative features too.
    assert set(result["per_class"]) == {"0", "1"}
    for view in result["per_class"].values():
        assert {f["feature"] for f in view["top_features"][:2]} == set(INFORMATIVE)
    summary = result["summary"]
    assert "relies mostly on" in summary and ("f2" in summary or "f5" in summary) and "Shuffling" in summary
    assert Path(result["files"]["features_png"]).stat().st_size > 1000


def test_an_export_explains_like_its_run(trained, tmp_path):
    manifest = json.loads((trained / "run.json").read_text())
    result = explain(f"model_dir={manifest['export']['path']}", "explain.split=all", "explain.samples=100", "explain.steps=16",
                     out=tmp_path)
    assert result["records"] == 100 and {f["feature"] for f in result["features"][:2]} == set(INFORMATIVE)


def test_images_get_saliency_overlays(train, tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("dark", "bright"):
        (root / label).mkdir(parents=True)
        for i in range(20):
            value = 40 if label == "dark" else 215
            pixels = np.clip(rng.normal(value, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    run = train("data=image_folder", f"data.path={root}", "data.image_size=[8,8]", "model=cnn", "model.filters=[4]",
                "model.dense_units=8", "data.batch_size=8", "trainer.epochs=1", run_dir=tmp_path / "run")
    result = explain(f"run={tmp_path / 'run'}", "explain.samples=8", "explain.steps=8", out=tmp_path / "out")
    assert result["saliency_mean"]["shape"] == [8, 8, 3]
    assert Path(result["files"]["saliency_png"]).stat().st_size > 1000
    assert run["status"] == "ok"


def test_explain_without_a_model_is_a_config_error():
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError, match="run="):
        compose("mode=explain")
