"""expertseg compare: matrices, consensus, distribution metrics, style map and a self-contained report."""

import json
import re

import pytest
from mlflow import MlflowClient

from pipelines.adapt import adapt
from pipelines.compare import compare
from pipelines.pretrain import pretrain

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.steps=6", "train.val_every=100", "predict.sw_batch_size=1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from toydata import make_toy_dataset

    root = tmp_path_factory.mktemp("compare")
    data = make_toy_dataset(root / "data")
    pretrain(data=str(data), out=str(root / "pre"), overrides=TINY, tracking="local", progress=False)
    pretrain(data=str(data), out=str(root / "pooled"), overrides=TINY + ("sampling.pool_experts=true",), tracking="local", progress=False)
    adapt(model=str(root / "pre"), data=str(data), expert="newdoc", out=str(root / "ad"), shots=2, overrides=("adapt.steps=4", "adapt.batch_size=1"), tracking="local", progress=False)
    return data, root


def test_compare_writes_every_part_of_the_report(models, tmp_path, mlflow_uri):
    data, root = models
    result = compare(model=str(root / "ad"), data=str(data), out=str(tmp_path / "c"), runs=(str(root / "pooled"),), progress=False)
    experts = ["small", "medium", "large", "scribbler", "newdoc"]
    assert result["model_experts"] == experts and result["adapted"] == ["newdoc"]
    m = result["model_vs_labels"]
    assert m["rows"] == experts and m["cols"] == experts and len(m["mean"]) == 5 and len(m["core"][0]) == 5
    h = result["labels_vs_labels"]
    assert h["mean"][0][0] is None and 0 < h["mean"][0][2] < 1  # no self-agreement; small vs large overlaps
    assert set(result["staple_profile"]) == set(experts)
    assert set(result["distribution"]) == {"core", "rim"} and set(result["distribution"]["rim"]) == {"ged", "soft_dice", "dmax", "dmatch"}
    assert len(result["style_map"]["coords"]) == 5
    assert set(result["other_models"][str(root / "pooled")]) == set(experts)
    out = tmp_path / "c"
    doc = (out / "report.html").read_text()
    assert doc.count("data:image/png;base64,") == 6
    assert not re.search(r"(src|href)=\"(?!data:)", doc) and "<script" not in doc and "http" not in doc
    json.loads((out / "compare.json").read_text())
    for name in ("model_vs_labels", "labels_vs_labels", "model_vs_model", "consensus"):
        assert (out / f"{name}.csv").read_text().startswith("row,col,mean")
    client = MlflowClient(tracking_uri=mlflow_uri)
    arts = {a.path for a in client.list_artifacts(result["mlflow_run_id"])} | {a.path for a in client.list_artifacts(result["mlflow_run_id"], "figures")}
    assert {"report.html", "compare.json", "figures/style_map.png", "figures/matrices.png"} <= arts


def test_compare_refuses_to_overwrite(models, tmp_path):
    from experts.errors import ConfigError

    data, root = models
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="--overwrite"):
        compare(model=str(root / "pre"), data=str(data), out=str(tmp_path / "c"), tracking="local", progress=False)
