"""The moving average of trained weights that adaptation scores and keeps."""

import pytest
import torch

from experts.training.averaging import WeightAverage


def test_the_average_follows_the_warm_up_then_the_decay():
    p = torch.nn.Parameter(torch.zeros(2))
    avg = WeightAverage([p], 0.5)
    expected = torch.zeros(2)
    for n, v in enumerate([1.0, 2.0, 3.0, 4.0, 5.0], start=1):
        with torch.no_grad():
            p.fill_(v)
        avg.update()
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
        assert torch.allclose(avg.average[0], expected)
    assert avg.updates == 5 and not torch.allclose(expected, torch.full((2,), 5.0))


def test_applied_swaps_the_average_in_and_restores_the_weights():
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    avg = WeightAverage([p], 0.9)
    with torch.no_grad():
        p.mul_(3.0)
    avg.update()
    with avg.applied():
        assert torch.allclose(p.data, avg.average[0]) and not torch.equal(p.data, torch.tensor([3.0, -3.0]))
    assert torch.equal(p.data, torch.tensor([3.0, -3.0]))


def test_state_round_trips_and_a_wrong_size_or_decay_is_refused():
    p = torch.nn.Parameter(torch.ones(3))
    avg = WeightAverage([p], 0.9)
    with torch.no_grad():
        p.fill_(2.0)
    avg.update()
    other = WeightAverage([torch.nn.Parameter(torch.zeros(3))], 0.9)
    other.load_state_dict(avg.state_dict())
    assert other.updates == 1 and torch.equal(other.average[0], avg.average[0])
    with pytest.raises(ValueError, match="cannot be loaded"):
        WeightAverage([p, p], 0.9).load_state_dict(avg.state_dict())
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            WeightAverage([p], bad)
