"""The local self-attention block: bounded memory, a role of its own, shared by every expert."""

import torch

from experts.adaptation.trainable import create_trainable
from experts.networks import create_network
from experts.networks.attention import LocalSelfAttention


def attention_net(**kw):
    torch.manual_seed(0)
    return create_network("cin_unet", in_channels=1, num_classes=3, num_experts=2, channels=(4, 8, 8, 16), features=("decoder.0", "attention"), attention={"level": 2, "heads": 4, "radius": [2, 2, 2], **kw})


def test_attention_of_a_64_cubed_patch_is_bounded_by_its_window():
    net = attention_net()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64, 64), torch.tensor([0]))
    a = out.features["attention"]
    assert a.shape == (1, 4, 5, 5, 5, 16, 16, 16)  # [B, heads, window, 1/4-resolution grid]
    tokens = 16**3
    assert a.numel() == 4 * 125 * tokens and a.numel() < 4 * tokens**2 / 30  # full attention: 4 x 4096^2
    assert torch.allclose(a.sum((2, 3, 4)), torch.ones(1, 4, 16, 16, 16), atol=1e-5)


def test_out_of_grid_neighbours_get_no_weight():
    block = LocalSelfAttention(4, heads=2, radius=(1, 1, 1))
    _, a = block(torch.randn(1, 4, 3, 3, 3))
    assert (a[..., 0, :, :, 0, :, :] == 0).all()  # offset -1 along D at the first slice


def test_a_fresh_block_leaves_the_network_output_unchanged():
    with_block = attention_net()
    torch.manual_seed(0)
    plain = create_network("cin_unet", in_channels=1, num_classes=3, num_experts=2, channels=(4, 8, 8, 16))
    plain.load_state_dict({k: v for k, v in with_block.state_dict().items() if not k.startswith("attention.")})
    x, e = torch.randn(1, 1, 16, 16, 16), torch.tensor([1])
    assert torch.allclose(with_block(x, e).logits, plain(x, e).logits)


def test_block_parameters_are_shared_under_their_own_role_and_adaptation_keeps_them_frozen():
    net = attention_net()
    groups = net.parameter_groups()
    block = {id(p) for p in net.attention.parameters()}
    assert {id(p) for p in groups["attention"].values()} == block
    assert not block & {id(p) for role, g in groups.items() if role != "attention" for p in g.values()}
    assert block <= {id(p) for p in net.shared_parameters()}
    for name, frozen in (("rows", True), ("decoder", True), ("all", False)):
        trained = {id(p) for p in create_trainable(name).shared(net, 0)}
        assert (not block & trained) == frozen, name


def test_unknown_attention_options_and_levels_are_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown key"):
        attention_net(size=3)
    with pytest.raises(ValueError, match="decoder level 0..2"):
        attention_net(level=2 + 5)
    with pytest.raises(ValueError, match="unknown feature"):
        create_network("cin_unet", in_channels=1, num_classes=3, num_experts=1, channels=(4, 8), features=("attention",))
