"""Case-selection strategies on hand-made signals: every registered strategy's contract, then each
strategy's own behaviour with tiny expected values."""

import numpy as np
import pytest

from experts.errors import ConfigError
from experts.selection import STRATEGIES, CaseSignals, create_strategy


def signals(n=6, *, seed=0, duplicate_of=None):
    """``n`` cases with distinct disagreement, foreground and 4-channel pooled features; with
    ``duplicate_of=i`` the last case is an exact copy of case ``i`` under another id."""
    rng = np.random.default_rng(seed)
    out = [CaseSignals(case=f"c{i}", foreground_ml=float(10 + i), disagreement=0.01 * (i + 1), disagreement_foreground=0.02 * (i + 1), features=rng.normal(size=4)) for i in range(n)]
    if duplicate_of is not None:
        src = out[duplicate_of]
        out[-1] = CaseSignals(case=out[-1].case, foreground_ml=src.foreground_ml, disagreement=src.disagreement, disagreement_foreground=src.disagreement_foreground, features=src.features.copy())
    return out


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_ranks_every_candidate_once_and_repeats_itself_for_a_seed(name):
    strategy = create_strategy(name)
    cands = signals()
    first = strategy.rank(cands, seed=3)
    again = create_strategy(name).rank(list(reversed(cands)), seed=3)  # the input order does not matter
    assert [r.case for r in first] == [r.case for r in again]
    assert [r.score for r in first] == [r.score for r in again] and [r.parts for r in first] == [r.parts for r in again]
    assert sorted(r.case for r in first) == sorted(c.case for c in cands) and [r.rank for r in first] == list(range(1, 7))
    assert all(isinstance(r.reason(), str) and r.reason() for r in first)  # every case has its reason
    if strategy.seeded:
        orders = {tuple(r.case for r in strategy.rank(cands, seed=s)) for s in range(8)}
        assert len(orders) > 1  # the seed matters


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_refuses_unknown_parameters_in_one_line(name):
    with pytest.raises(ConfigError) as err:
        create_strategy({"name": name, "params": {"nonsense": 1}})
    assert len(err.value.problems) == 1 and name in err.value.problems[0] and "nonsense" in err.value.problems[0]


def test_an_unknown_strategy_names_the_known_ones():
    with pytest.raises(ConfigError, match="known: disagreement, disagreement\\+diversity, diversity, foreground-random, random"):
        create_strategy("entropy")


def test_a_strategy_without_the_signals_it_needs_says_which():
    bare = [CaseSignals(case="a"), CaseSignals(case="b")]
    with pytest.raises(ValueError, match="needs the signal\\(s\\) features"):
        create_strategy("diversity").rank(bare)
    assert [r.case for r in create_strategy("random").rank(bare, seed=0)]  # random needs nothing


def test_disagreement_ranks_by_mean_mutual_information_and_breaks_ties_by_case_id():
    cands = [CaseSignals(case=c, disagreement=d, disagreement_foreground=0.0, foreground_ml=1.0) for c, d in (("b", 0.2), ("a", 0.2), ("c", 0.5), ("d", 0.1))]
    ranked = create_strategy("disagreement").rank(cands)
    assert [r.case for r in ranked] == ["c", "a", "b", "d"]
    assert ranked[0].score == 0.5 and ranked[0].parts["disagreement"] == 0.5


def test_foreground_random_draws_in_proportion_to_foreground_and_never_draws_empty_cases_first():
    # weights 1 : 3 : 0 -> first draw is 'big' with probability 3/4, 'empty' never comes before the others
    cands = [CaseSignals(case="small", foreground_ml=1.0), CaseSignals(case="big", foreground_ml=3.0), CaseSignals(case="empty", foreground_ml=0.0)]
    strategy = create_strategy("foreground-random")
    firsts = [strategy.rank(cands, seed=s)[0].case for s in range(2000)]
    assert abs(firsts.count("big") / 2000 - 0.75) < 0.03
    assert all(strategy.rank(cands, seed=s)[-1].case == "empty" for s in range(50))
    assert strategy.rank(cands, seed=0)[0].parts["weight"] in (0.25, 0.75)


def test_random_is_a_uniform_permutation():
    cands = [CaseSignals(case=f"c{i}") for i in range(3)]
    firsts = [create_strategy("random").rank(cands, seed=s)[0].case for s in range(1500)]
    assert all(abs(firsts.count(c) / 1500 - 1 / 3) < 0.04 for c in ("c0", "c1", "c2"))


@pytest.mark.parametrize("name", ["diversity", "disagreement+diversity"])
@pytest.mark.parametrize("duplicate_of", [0, 2, 4])
def test_diversity_never_picks_two_identical_cases(name, duplicate_of):
    cands = signals(6, duplicate_of=duplicate_of)  # 5 distinct cases, one of them twice
    ranked = create_strategy(name).rank(cands, seed=0)
    top = [r.case for r in ranked[:5]]
    assert not {f"c{duplicate_of}", "c5"} <= set(top), top  # the copy comes only after every distinct case
    assert ranked[-1].case in (f"c{duplicate_of}", "c5") and ranked[-1].parts["distance"] == 0.0


def test_k_centre_greedy_takes_the_farthest_case_each_time():
    # points on a line at 0, 1, 2, 10: medoid 1 (mean distances 13/4, 10/4, 11/4, 27/4 -> 1 is smallest),
    # then 10 (distance 9), then 0 and 2 (distance 1 each: case-id order), then the other
    cands = [CaseSignals(case=c, features=np.array([x])) for c, x in (("p0", 0.0), ("p1", 1.0), ("p2", 2.0), ("p10", 10.0))]
    ranked = create_strategy("diversity").rank(cands)
    assert [r.case for r in ranked] == ["p1", "p10", "p0", "p2"]
    assert [r.parts.get("distance") for r in ranked] == [None, 9.0, 1.0, 1.0]


def test_diversity_keeps_away_from_the_cases_the_doctor_already_labelled():
    cands = [CaseSignals(case=c, features=np.array([x])) for c, x in (("near", 0.1), ("far", 5.0), ("mid", 2.0))]
    done = [CaseSignals(case="done", features=np.array([0.0]))]
    ranked = create_strategy("diversity").rank(cands, labelled=done)
    assert [r.case for r in ranked] == ["far", "mid", "near"] and ranked[0].parts["distance"] == 5.0


def test_disagreement_plus_diversity_trades_off_by_its_weight():
    # 'a' and 'b' disagree most but are twins; 'c' disagrees less and is far away
    cands = [CaseSignals(case="a", disagreement=1.0, features=np.array([0.0])), CaseSignals(case="b", disagreement=0.9, features=np.array([0.01])), CaseSignals(case="c", disagreement=0.5, features=np.array([4.0]))]
    order = lambda w: [r.case for r in create_strategy({"name": "disagreement+diversity", "params": {"weight": w}}).rank(cands)]  # noqa: E731
    assert order(0.0) == ["a", "b", "c"] == [r.case for r in create_strategy("disagreement").rank(cands)]
    assert order(0.5) == ["a", "c", "b"]  # after 'a': c scores 0.5*0.5/0.9 + 0.5 = 0.78, b 0.5 + 0.5*0.0025 = 0.50
    with pytest.raises(ConfigError, match="between 0 and 1"):
        create_strategy({"name": "disagreement+diversity", "params": {"weight": 1.5}})


def test_repeated_candidates_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        create_strategy("random").rank([CaseSignals(case="a"), CaseSignals(case="a")])
