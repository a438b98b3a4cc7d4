"""Conditional instance norm: the formula, initialisation and added rows."""

import torch

from experts.networks import ConditionalInstanceNorm


def test_rows_start_as_identity_affine():
    cin = ConditionalInstanceNorm(4, 3)
    gamma, beta = cin.table()
    assert torch.equal(gamma, torch.ones(3, 4)) and torch.equal(beta, torch.zeros(3, 4))


def test_output_is_expert_scale_and_shift_of_normalised_input():
    torch.manual_seed(0)
    cin = ConditionalInstanceNorm(2, 2)
    with torch.no_grad():
        cin.gamma[0].copy_(torch.tensor([[1.0, 1.0], [2.0, 0.5]]))
        cin.beta[0].copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
    x = torch.randn(1, 2, 3, 4, 5)  # [B, C, D, H, W]
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    std = (x.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + 1e-5).sqrt()
    expected = torch.tensor([2.0, 0.5]).view(1, 2, 1, 1, 1) * (x - mean) / std + torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)
    assert torch.allclose(cin(x, torch.tensor([1])), expected, atol=1e-5)


def test_added_rows_are_separate_parameters_used_by_their_index():
    cin = ConditionalInstanceNorm(2, 2)
    g, b = cin.add_experts(torch.full((1, 2), 3.0), torch.full((1, 2), -2.0))
    assert cin.num_experts == 3 and g is cin.gamma[1] and b is cin.beta[1]
    x = torch.randn(1, 2, 2, 2, 2)
    out = cin(x, torch.tensor([2]))
    assert torch.allclose(out, 3.0 * torch.nn.functional.instance_norm(x) - 2.0, atol=1e-5)
    out.sum().backward()
    assert cin.gamma[0].grad is None or torch.all(cin.gamma[0].grad == 0)


def test_merge_blocks_keeps_the_table():
    cin = ConditionalInstanceNorm(2, 2)
    cin.add_experts(torch.full((1, 2), 3.0), torch.zeros(1, 2))
    before = [t.clone() for t in cin.table()]
    cin.merge_blocks()
    assert len(cin.gamma) == 1 and all(torch.equal(a, b) for a, b in zip(before, cin.table()))
