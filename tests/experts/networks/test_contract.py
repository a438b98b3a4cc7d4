"""One contract over every registered network: shapes, gradients, conditioning, state_dict."""

import pytest
import torch

from experts.networks import NETWORKS, CIN_PLACEMENTS, create_network

SMALL = dict(in_channels=2, num_classes=3, num_experts=3, channels=(4, 8, 16))
PATCH = (16, 16, 16)  # 3 levels: 16 -> 8 -> 4 voxels at the bottom


def build(name, **overrides):
    torch.manual_seed(0)
    net = create_network(name, **{**SMALL, **overrides})
    # Non-trivial expert rows, so that experts differ before any training.
    with torch.no_grad():
        for layer in net.cin_layers():
            layer.gamma[0].uniform_(0.5, 1.5)
            layer.beta[0].uniform_(-0.5, 0.5)
    return net


@pytest.fixture(params=NETWORKS.names())
def name(request):
    return request.param


def test_forward_gives_logits_without_nans(name):
    net = build(name)
    out = net(torch.randn(2, 2, *PATCH), torch.tensor([0, 2]))  # [B=2, C=2, 16^3] -> [2, 3, 16^3]
    assert out.shape == (2, 3, *PATCH)
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient(name):
    net = build(name)
    out = net(torch.randn(3, 2, *PATCH), torch.tensor([0, 1, 2]))
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_two_experts_give_different_outputs(name):
    net = build(name).eval()
    x = torch.randn(1, 2, *PATCH)
    a, b = net(x, torch.tensor([0])), net(x, torch.tensor([1]))
    assert (a - b).abs().max() > 1e-4


def test_unused_expert_row_gets_no_gradient(name):
    net = build(name)
    out = net(torch.randn(2, 2, *PATCH), torch.tensor([0, 2]))  # row 1 unused
    out.square().mean().backward()
    for layer in net.cin_layers():
        assert torch.all(layer.gamma[0].grad[1] == 0) and torch.all(layer.beta[0].grad[1] == 0)
        assert layer.gamma[0].grad[0].abs().sum() > 0


def test_state_dict_round_trip_reproduces_outputs(name, tmp_path):
    net = build(name).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    other = create_network(name, **SMALL).eval()
    other.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    x, e = torch.randn(2, 2, *PATCH), torch.tensor([1, 2])
    assert torch.equal(net(x, e), other(x, e))


def test_batch_mixes_experts_independently(name):
    net = build(name).eval()
    x = torch.randn(1, 2, *PATCH)
    both = net(x.expand(2, -1, -1, -1, -1), torch.tensor([0, 1]))
    assert torch.allclose(both[1:], net(x, torch.tensor([1])), atol=1e-5)


@pytest.mark.parametrize("placement", CIN_PLACEMENTS)
def test_cin_placement_conditions_only_its_part(placement):
    net = build("cin_unet", cin=placement)
    enc = sum(1 for m in net.encoder.modules() if m.__class__.__name__ == "ConditionalInstanceNorm")
    dec = sum(1 for m in net.decoder.modules() if m.__class__.__name__ == "ConditionalInstanceNorm")
    assert (enc > 0, dec > 0) == {"all": (True, True), "encoder": (True, False), "decoder": (False, True)}[placement]


def test_patch_too_small_for_depth_is_refused():
    net = build("cin_unet")
    with pytest.raises(ValueError, match="at least 8 voxels"):
        net.check_input_size((16, 16, 4))
    net.check_input_size(PATCH)
