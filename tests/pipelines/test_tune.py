"""Tuning on one machine: nested MLflow runs under one parent, pruning, an exported best config."""

import json

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from experts.errors import ConfigError
from pipelines.runtime.config import load_config
from pipelines.pretrain import pretrain
from pipelines.tune import tune

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.val_every=2", "train.steps=4", "predict.sw_batch_size=1")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from toydata import make_toy_dataset

    root = tmp_path_factory.mktemp("tune")
    data = make_toy_dataset(root / "data")
    pretrain(data=str(data), out=str(root / "pre"), overrides=TINY, tracking="local", progress=False)
    return data, root / "pre"


def test_adapt_study_nests_trials_and_exports_a_loadable_best_config(pretrained, tmp_path, mlflow_uri):
    data, pre = pretrained
    summary = tune(data=str(data), stage="adapt", trials=4, out=str(tmp_path / "t"), storage=f"journal:{tmp_path / 'study.log'}", study_name="s1", model=str(pre), expert="newdoc", shots=2, overrides=("adapt.steps=6", "adapt.eval_every=2", "adapt.batch_size=1"))
    assert sum(summary["trials"].values()) == 4 and summary["trials"]["complete"] >= 1
    cfg = load_config(summary["best_config"])
    assert cfg.adapt.lr == pytest.approx(summary["best_params"]["adapt.lr"])
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("expertseg-tune")
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")
    assert len(children) == 4
    assert all(client.get_metric_history(r.info.run_id, "val/dice") for r in children)
    # A second worker joins the same study and the same parent run.
    again = tune(data=str(data), stage="adapt", trials=1, out=str(tmp_path / "t2"), storage=f"journal:{tmp_path / 'study.log'}", study_name="s1", model=str(pre), expert="newdoc", shots=2, overrides=("adapt.steps=6", "adapt.eval_every=2", "adapt.batch_size=1"))
    assert again["mlflow_parent_run_id"] == summary["mlflow_parent_run_id"] and sum(again["trials"].values()) == 5


def test_validation_never_uses_test_cases(pretrained, tmp_path):
    data, pre = pretrained
    tune(data=str(data), stage="adapt", trials=1, out=str(tmp_path / "t"), model=str(pre), expert="newdoc", shots=2, tracking="local", overrides=("adapt.steps=2", "adapt.eval_every=2", "adapt.batch_size=1"))
    logged = [json.loads(l) for l in (tmp_path / "t" / "trial-0000" / "tracking.jsonl").read_text().splitlines()]
    cases = next(e["params"]["validation_cases"] for e in logged if e["event"] == "params").split(",")
    assert cases and all(c.startswith("case") for c in cases)  # training cases; test cases are test00...


def test_pretrain_study_prunes_a_trial_below_the_median_of_earlier_trials(pretrained, tmp_path):
    data, _ = pretrained
    storage = f"journal:{tmp_path / 'study.log'}"
    from pipelines.tune import open_storage

    # Two earlier trials that reached a perfect validation Dice at every step: the median pruner
    # (2 start-up trials) must stop any toy trial at its first validation, which scores below 1.
    study = optuna.create_study(study_name="p", storage=open_storage(storage, heartbeat=0, grace=None), direction="maximize")
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0, intermediate_values={2: 1.0, 4: 1.0}))
    summary = tune(data=str(data), stage="pretrain", trials=2, out=str(tmp_path / "t"), storage=storage, study_name="p", tracking="local", overrides=TINY, pruner="median")
    assert summary["trials"]["pruned"] == 2 and summary["trials"]["complete"] == 2
    pruned = [t for t in optuna.load_study(study_name="p", storage=open_storage(storage, heartbeat=0, grace=None)).trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(list(t.intermediate_values) == [2] for t in pruned)  # stopped at the first validation


def test_pretrain_study_exports_a_best_config_with_a_searched_patch_size(pretrained, tmp_path):
    data, _ = pretrained
    summary = tune(data=str(data), stage="pretrain", trials=1, out=str(tmp_path / "t"), tracking="local", overrides=TINY, pruner="none")
    best = yaml.safe_load(open(summary["best_config"]))
    assert best["data"]["patch_size"][0] in (32, 48, 64)
    assert [t["name"] for t in best["loss"]["terms"]] == ["partial_dice_ce"] and best["loss"]["terms"][0]["params"]["dice_weight"] in (0.5, 1.0, 2.0)


def test_adapt_stage_needs_a_model_and_an_expert(pretrained, tmp_path):
    data, _ = pretrained
    with pytest.raises(ConfigError, match="needs --model"):
        tune(data=str(data), stage="adapt", trials=1, out=str(tmp_path / "t"), tracking="local")
