"""ExpertComparison and own_label_dice: hand-computed Dice matrices, consensus, colleagues, per-case values."""

import numpy as np
import pytest

from experts.comparison import ExpertComparison, own_label_dice


def vol(rows):
    """Nested rows [4][4] -> uint8 label volume [X=4, Y=4, Z=1]."""
    return np.array(rows, dtype=np.uint8)[:, :, None]


def probs(*labels, k):
    """One-hot probabilities [E, K, X, Y, Z] of label volumes [X, Y, Z]: a model predicting exactly them."""
    return np.stack([np.moveaxis(np.eye(k, dtype=np.float32)[lab], -1, 0) for lab in labels])


# Core (class 1) masks; |A| = 4, |B| = 5, |C| = 1, A in B, C in A.
A = vol([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
B = vol([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
C = vol([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
# Rim (class 2) around A; |R| = 5, |A + R| = 9 voxels.
AR = vol([[1, 1, 2, 0], [1, 1, 2, 0], [2, 2, 2, 0], [0, 0, 0, 0]])
BR = vol([[1, 1, 1, 0], [1, 1, 2, 0], [2, 2, 2, 2], [0, 0, 0, 0]])

AB, AC, BC = 2 * 4 / 9, 2 * 1 / 5, 2 * 1 / 6  # Dice(A, B), Dice(A, C), Dice(B, C) of the core

NAMES_2 = ["background", "core"]
NAMES_3 = ["background", "core", "rim"]


def comparison(labels, *, names=NAMES_2, model=None):
    """A comparison of one case; the model reproduces ``model`` (default: each expert's labels)."""
    experts = list(labels)
    model = model or labels
    cmp = ExpertComparison(class_names=names, model_experts=list(model), label_experts=experts)
    cmp.add_case("case0", probabilities=probs(*model.values(), k=len(names)), labels=labels)
    return cmp


# (name, labels per expert [X, Y, Z], class names)
REPRODUCED = [
    ("two_experts", {"a": A, "b": B}, NAMES_2),
    ("three_experts", {"a": A, "b": B, "c": C}, NAMES_2),
    ("two_classes", {"a": AR, "b": BR}, NAMES_3),
]


@pytest.mark.parametrize("name,labels,names", REPRODUCED, ids=[c[0] for c in REPRODUCED])
def test_model_reproducing_each_expert_has_a_diagonal_of_one(name, labels, names):
    s = comparison(labels, names=names).summary()
    m, h = s["model_vs_labels"], s["labels_vs_labels"]
    n = len(labels)
    assert [m["mean"][i][i] for i in range(n)] == [1.0] * n
    for i in range(n):  # off the diagonal the model is as far from a colleague as its expert is
        for j in range(n):
            if i != j:
                assert m["mean"][i][j] == pytest.approx(h["mean"][i][j])
    assert s["own_labels_per_case"] == {e: [1.0] for e in labels}


def test_labels_vs_labels_is_the_hand_computed_dice_with_an_empty_diagonal():
    h = comparison({"a": A, "b": B, "c": C}).summary()["labels_vs_labels"]
    expected = [[None, AB, AC], [AB, None, BC], [AC, BC, None]]
    assert h["rows"] == h["cols"] == ["a", "b", "c"]
    for table in (h["mean"], h["core"]):  # one class: the mean is that class
        assert table == [[pytest.approx(v) if v is not None else None for v in row] for row in expected]


def test_model_vs_model_compares_predictions_not_labels():
    # the model predicts C for "a" and B for "b", whatever the labels say
    s = comparison({"a": A, "b": B}, model={"a": C, "b": B}).summary()
    assert s["model_vs_model"]["mean"] == [[None, pytest.approx(BC)], [pytest.approx(BC), None]]
    assert s["model_vs_labels"]["mean"] == [[pytest.approx(AC), pytest.approx(BC)], [pytest.approx(AB), 1.0]]


def test_majority_vote_tie_gets_the_tie_label_and_counts_as_background():
    # two raters disagree on voxel (0, 2): a tie, so the vote there is K = 2 and scores as background
    s = comparison({"a": A, "b": B}).summary()
    cons = s["consensus"]
    assert cons["rows"] == ["majority vote", "STAPLE", "model consensus"]
    assert cons["cols"] == ["a", "b", "majority vote", "STAPLE"]
    assert cons["mean"][0][:2] == [1.0, pytest.approx(AB)]  # vote == A; resolving the tie to core would give B
    assert cons["mean"][0][2:] == [None, None]  # the baselines are not scored against each other
    assert comparison({"a": A, "b": B}).conventions["tie_label"] == 2


def test_model_consensus_is_the_argmax_of_the_mean_probability():
    # experts' one-hot probabilities of A and B: their mean ties (0.5/0.5) at voxel (0, 2), argmax -> background
    cons = comparison({"a": A, "b": B}).summary()["consensus"]
    assert cons["mean"][2][:3] == [1.0, pytest.approx(AB), 1.0]  # against a, b and the majority vote


@pytest.mark.parametrize(
    "labels,closest",
    [
        ({"a": A, "b": B, "c": C}, {"a": ("b", AB), "b": ("a", AB), "c": ("a", AC)}),
        ({"a": B, "b": C}, {"a": ("b", BC), "b": ("a", BC)}),
    ],
    ids=["three_experts", "two_experts"],
)
def test_closest_colleague_is_the_one_whose_labels_agree_most(labels, closest):
    got = comparison(labels).summary()["closest_colleague"]
    assert {e: (v["colleague"], pytest.approx(v["dice"])) for e, v in got.items()} == closest


def test_closest_colleague_is_none_without_a_colleague_on_any_case():
    cmp = ExpertComparison(class_names=NAMES_2, model_experts=["a"], label_experts=["a", "b"])
    cmp.add_case("case0", probabilities=probs(A, k=2), labels={"a": A})
    assert cmp.summary()["closest_colleague"] == {"a": {"colleague": None, "dice": None}, "b": {"colleague": None, "dice": None}}


def test_class_absent_from_both_volumes_is_left_out_of_the_means():
    # case 0 has no rim anywhere; case 1 has rim: Dice(R_a, R_b) = 2 * 4 / (5 + 5) = 0.8, core = 8/9
    cmp = ExpertComparison(class_names=NAMES_3, model_experts=["a", "b"], label_experts=["a", "b"])
    cmp.add_case("case0", probabilities=probs(A, B, k=3), labels={"a": A, "b": B})
    h0 = cmp.summary()["labels_vs_labels"]
    assert h0["rim"][0][1] is None and h0["mean"][0][1] == pytest.approx(AB)  # not (8/9 + 0) / 2, nor (8/9 + 1) / 2
    cmp.add_case("case1", probabilities=probs(AR, BR, k=3), labels={"a": AR, "b": BR})
    h = cmp.summary()["labels_vs_labels"]
    assert h["core"][0][1] == pytest.approx(AB) and h["rim"][0][1] == pytest.approx(0.8)  # rim: one case only
    assert h["mean"][0][1] == pytest.approx((AB + 0.8) / 2)


def test_own_labels_per_case_holds_one_dice_per_case():
    # case 0: the model reproduces both experts; case 1: the model for "a" predicts C against a's A
    cmp = ExpertComparison(class_names=NAMES_3, model_experts=["a", "b"], label_experts=["a", "b"])
    cmp.add_case("case0", probabilities=probs(A, B, k=3), labels={"a": A, "b": B})
    cmp.add_case("case1", probabilities=probs(C, B, k=3), labels={"a": A, "b": B})
    own = cmp.summary()["own_labels_per_case"]
    assert own == {"a": [1.0, pytest.approx(AC)], "b": [1.0, 1.0]}  # rim absent everywhere: core only


def test_own_labels_per_case_skips_experts_without_labels():
    cmp = ExpertComparison(class_names=NAMES_2, model_experts=["a", "b", "new"], label_experts=["a", "b"])
    cmp.add_case("case0", probabilities=probs(A, B, C, k=2), labels={"a": A, "b": B})
    cmp.add_case("case1", probabilities=probs(A, B, C, k=2), labels={"a": A})
    s = cmp.summary()
    assert s["own_labels_per_case"] == {"a": [1.0, 1.0], "b": [1.0]}
    assert s["model_vs_labels"]["rows"] == ["a", "b", "new"] and s["model_vs_labels"]["cols"] == ["a", "b"]


def test_reproducing_the_raters_gives_perfect_distribution_metrics():
    s = comparison({"a": AR, "b": BR}, names=NAMES_3).summary()
    for name in ("core", "rim"):
        d = s["distribution"][name]
        assert d["ged"] == pytest.approx(0.0)
        assert d["soft_dice"] == pytest.approx(1.0) and d["dmax"] == pytest.approx(1.0) and d["dmatch"] == pytest.approx(1.0)
    assert set(s["staple_profile"]) == {"a", "b"} and set(s["staple_profile"]["a"]) == {"core", "rim"}


def test_cases_with_one_expert_labelled_give_no_consensus_or_distribution():
    cmp = ExpertComparison(class_names=NAMES_2, model_experts=["a", "b"], label_experts=["a", "b"])
    cmp.add_case("case0", probabilities=probs(A, B, k=2), labels={"a": A})
    s = cmp.summary()
    assert s["distribution"] == {} and s["staple_profile"] == {}
    assert all(v is None for row in s["consensus"]["mean"] for v in row)
    assert s["model_vs_labels"]["mean"] == [[1.0, None], [pytest.approx(AB), None]]


@pytest.mark.parametrize(
    "kwargs,labels,match",
    [
        ({"probabilities": probs(A, k=2)}, {"a": A}, r"\[E, K, X, Y, Z\]"),  # one expert's probabilities for two
        ({"probabilities": probs(A, B, k=3)}, {"a": A}, r"\[E, K, X, Y, Z\]"),  # three classes for two
        ({"probabilities": probs(A, B, k=2)}, {"x": A}, "not one of label_experts"),
        ({"probabilities": probs(A, B, k=2)}, {"a": A[:2]}, "shape"),
    ],
    ids=["too_few_experts", "too_many_classes", "unknown_labeller", "label_shape"],
)
def test_add_case_refuses_inconsistent_inputs(kwargs, labels, match):
    cmp = ExpertComparison(class_names=NAMES_2, model_experts=["a", "b"], label_experts=["a", "b"])
    with pytest.raises(ValueError, match=match):
        cmp.add_case("case0", labels=labels, **kwargs)


def test_a_case_is_added_once():
    cmp = comparison({"a": A, "b": B})
    with pytest.raises(ValueError, match="already added"):
        cmp.add_case("case0", probabilities=probs(A, B, k=2), labels={"a": A, "b": B})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"class_names": ["background"], "model_experts": ["a"], "label_experts": ["a"]}, "at least one class"),
        ({"class_names": NAMES_2, "model_experts": [], "label_experts": ["a"]}, "model_experts is empty"),
        ({"class_names": NAMES_2, "model_experts": ["a", "a"], "label_experts": ["a"]}, "must not repeat"),
    ],
    ids=["no_foreground", "no_model_expert", "repeated_expert"],
)
def test_comparison_refuses_bad_set_up(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExpertComparison(**kwargs)


# (name, per case (predictions, labels), expected mean Dice per expert); one class, K = 2
OWN_LABEL_CASES = [
    ("mean_over_cases", [({"a": A}, {"a": A, "b": B}), ({"a": C}, {"a": A})], {"a": (1.0 + AC) / 2}),
    ("pooled_scored_against_everyone", [({"pooled": A}, {"a": A, "b": B})], {"a": 1.0, "b": AB}),
    ("expert_without_labels_left_out", [({"a": A, "x": B}, {"a": C})], {"a": AC}),
    ("class_absent_from_both_is_undefined", [({"a": np.zeros_like(A)}, {"a": np.zeros_like(A)})], {"a": None}),
]


@pytest.mark.parametrize("name,cases,expected", OWN_LABEL_CASES, ids=[c[0] for c in OWN_LABEL_CASES])
def test_own_label_dice_scores_each_expert_on_its_own_labels(name, cases, expected):
    got = own_label_dice(iter(cases), num_classes=2)
    assert got == {e: (None if v is None else pytest.approx(v)) for e, v in expected.items()}


def test_own_label_dice_without_a_pooled_expert_scores_pooled_as_a_name():
    assert own_label_dice([({"pooled": A}, {"a": A})], num_classes=2, pooled_expert=None) == {}
