"""The regularisers bench suite end to end at a toy scale (the numbers mean nothing here)."""

import pytest

from pipelines.bench import regularisers, runner
from toybench import tiny_mode_settings

TINY = tiny_mode_settings(
    overrides=("network.channels=[4,8,8]", "data.patch_size=[16,16,16]", "data.n_folds=4", "train.steps=4", "train.val_every=1000", "train.checkpoint_every=1000", "predict.sw_batch_size=1"),
    regulariser_search=True,
)


@pytest.fixture
def tiny_mode(monkeypatch):
    monkeypatch.setitem(runner.MODES, "tiny", TINY)
    grids = {"masked_crf": (0.1, [0.05, 0.2]), "attentive_similarity": (0.1, None), "em_class_ratio": (0.3, None), "shape_prior": (0.1, None)}
    monkeypatch.setattr(regularisers, "TERMS", grids)


@pytest.mark.slow  # about 3 minutes of toy pretrainings
def test_every_arm_is_scored_on_test_cases_with_weights_chosen_on_validation(tiny_mode, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("regularisers",), write=str(md), command="expertseg bench --tiny --suite regularisers")
    r = result["results"]["regularisers"]
    assert set(r["arms"]) == set(regularisers.ARMS) and set(r["summary"]) == set(regularisers.ARMS)
    assert set(r["search"]["masked_crf"]) == {"0.05", "0.2"} and r["weights"]["masked_crf"] in (0.05, 0.2)
    for arm, a in r["arms"].items():
        run = a["runs"][0]
        assert set(run["test"]) == set(r["experts"]) and set(run["val"]) == set(r["experts"]), arm
        assert all(0 <= v["dice"] <= 1 for v in run["test"].values())
        assert a["step"]["seconds"] > 0 and a["step"]["peak_mb"] >= 0
    assert r["summary"]["partial"]["step_ratio"] == pytest.approx(1.0)
    st = r["stage2"]  # every arm's model adapted to the new doctor from scribbles
    assert set(st["arms"]) == set(regularisers.ARMS) and len(st["cases"]) == 5
    assert all(0 <= a["test_dice"]["mean"] <= 1 for a in st["arms"].values())
    text = md.read_text()
    assert "## Scribble regularisers" in text and "| crf+attention |" in text and "expertseg bench --tiny --suite regularisers" in text
    assert f"Stage 2: each arm's seed-0 model adapted to `{st['expert']}`" in text
    assert (tmp_path / "benchmarks" / "scribble_regularisers.png").exists()


def test_an_arm_names_only_its_own_components():
    sets = regularisers.arm_overrides("crf+attention", {"masked_crf": 0.1, "attentive_similarity": 0.2}, steps=600, levels=4)
    assert '"masked_crf", "weight": 0.1, "start_step": 100, "ramp_steps": 200' in sets[0] and "attentive_similarity" in sets[0]
    assert "network.features=[decoder.0, attention]" in sets and not any(s.startswith("augment.") for s in sets)
    assert regularisers.arm_overrides("partial", {}, steps=600, levels=4) == ('loss.terms=[{"name": "partial_dice_ce"}]',)
