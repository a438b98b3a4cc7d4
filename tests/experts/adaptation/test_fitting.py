"""The stage-2 library: fit a new expert's row, update an existing expert's row."""

import pytest
import torch

from experts.adaptation import Adapter, LabelledCase
from experts.bundle import load_bundle
from experts.data.manifest import scan_dataset
from experts.errors import ConfigError

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.steps=2", "train.val_every=100", "predict.sw_batch_size=1")


@pytest.fixture(scope="module")
def base(toy_dataset_master, tmp_path_factory):
    from pipelines.pretrain import pretrain

    out = tmp_path_factory.mktemp("fitting") / "pre"
    pretrain(data=str(toy_dataset_master), out=str(out), overrides=TINY, tracking="local", progress=False)
    return load_bundle(out / "model"), scan_dataset(toy_dataset_master)


def labelled(manifest, expert, cases):
    return [LabelledCase(case=c, images=tuple(manifest.cases[c].images), label=manifest.label(c, expert).path, kind=manifest.label(c, expert).kind) for c in cases]


def probe(net, rows):
    torch.manual_seed(0)
    with torch.no_grad():
        return net.eval()(torch.randn(len(rows), 1, 16, 16, 16), torch.tensor(rows)).logits


def test_fit_holds_one_case_back_and_retrains_on_all_for_the_best_step(base):
    bundle, manifest = base
    before = probe(bundle.network, [0, 1, 2, 3])
    adapter = Adapter(bundle, "newdoc", steps=4, eval_every=2, batch_size=1, init="mean", trainable="rows").fit(labelled(manifest, "newdoc", ["case00", "case01", "case02"]))
    assert adapter.held_back_ == "case02" and [s for s, _ in adapter.history_] == [2, 4]
    assert adapter.steps_ == max(2, adapter.best_step_) and adapter.row_ == 4 and not adapter.forks_
    assert adapter.init_source_ == "mean of rows" and adapter.init_scores_ is None
    assert torch.equal(probe(adapter.network_, [0, 1, 2, 3]), before)  # the pretrained experts predict as before
    assert torch.equal(probe(bundle.network, [0, 1, 2, 3]), before)  # and the base model is untouched
    assert adapter.bundle().experts == bundle.experts + ["newdoc"]
    assert adapter.get_params()["init"] == "mean" and adapter.get_params()["trainable"] == "rows"


def test_fit_is_deterministic_for_a_seed(base):
    bundle, manifest = base
    cases = labelled(manifest, "newdoc", ["case00", "case01"])
    a = Adapter(bundle, "newdoc", steps=3, batch_size=1, seed=3).fit(cases)
    b = Adapter(bundle, "newdoc", steps=3, batch_size=1, seed=3).fit(cases)
    assert torch.equal(probe(a.network_, [4]), probe(b.network_, [4]))
    assert a.init_scores_ == b.init_scores_ and set(a.init_scores_) == set(bundle.experts)


def test_update_trains_only_the_existing_experts_row(base):
    bundle, manifest = base
    before = probe(bundle.network, [0, 1, 2, 3])
    adapter = Adapter(bundle, "small", steps=3, batch_size=1, lr=0.1).update("medium", labelled(manifest, "newdoc", ["case03"]))
    after = probe(adapter.network_, [0, 1, 2, 3])
    assert adapter.row_ == 1 and adapter.network_.num_experts == 4
    assert torch.equal(after[[0, 2, 3]], before[[0, 2, 3]]) and not torch.equal(after[1], before[1])
    assert torch.equal(probe(bundle.network, [0, 1, 2, 3]), before)


def test_update_continues_a_fitted_new_expert_from_partial_labels(base):
    bundle, manifest = base
    adapter = Adapter(bundle, "newdoc", steps=2, batch_size=1).fit(labelled(manifest, "newdoc", ["case00"]))
    fitted = probe(adapter.network_, [0, 4])
    partial = labelled(manifest, "scribbler", ["case01"])  # partial labels, as corrections would be
    assert partial[0].kind == "partial"
    adapter.update("newdoc", partial)
    again = probe(adapter.network_, [0, 4])
    assert torch.equal(again[0], fitted[0]) and not torch.equal(again[1], fitted[1])


def test_fit_refuses_an_expert_the_model_has_and_update_one_it_lacks(base):
    bundle, manifest = base
    cases = labelled(manifest, "newdoc", ["case00"])
    with pytest.raises(ConfigError, match="already in the model"):
        Adapter(bundle, "small").fit(cases)
    with pytest.raises(ConfigError, match="not in the model"):
        Adapter(bundle, "newdoc").update("nobody", cases)
    with pytest.raises(ConfigError, match="unknown trainable set"):
        Adapter(bundle, "newdoc", trainable="everything").fit(cases)


def test_average_keeps_the_moving_average_of_the_iterates_it_trained_through(base):
    bundle, manifest = base
    cases = labelled(manifest, "newdoc", ["case00"])

    def rows(steps, average=0.0):
        a = Adapter(bundle, "newdoc", steps=steps, batch_size=1, seed=2, init="mean", trainable="rows", lr=0.05, average=average).fit(cases)
        tables = a.network_.row_tables()
        return torch.cat([t[a.row_].flatten() for name in sorted(tables) for t in tables[name]])

    iterates = [rows(n) for n in (1, 2, 3)]  # the same seed: the same first steps
    start = Adapter(bundle, "newdoc", steps=1, init="mean").fit(cases).rows_init_
    expected = torch.cat([t.flatten() for name in sorted(start) for t in start[name]])
    for n, w in enumerate(iterates, start=1):
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * w
    assert torch.allclose(rows(3, average=0.9), expected, atol=1e-6)
    assert not torch.allclose(expected, iterates[-1])
