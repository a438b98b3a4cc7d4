"""The promptable network: seven prompt channels on a pretrained CIN U-Net, one target class out."""

import numpy as np
import pytest
import torch

from experts.networks import create_network
from experts.networks.promptable import PROMPT_CHANNELS, PromptableNetwork, binary_logits

PATCH = (16, 16, 16)


def pretrained(num_classes=3, num_experts=2, in_channels=1):
    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=in_channels, num_classes=num_classes, num_experts=num_experts, channels=(4, 8))
    with torch.no_grad():
        for layer in net.cin_layers().values():
            layer.gamma[0].uniform_(0.5, 1.5)
            layer.beta[0].uniform_(-0.5, 0.5)
    return net


def promptable(net, num_classes=3, in_channels=1):
    def build(*, in_channels):
        return create_network("cin_unet", in_channels=in_channels, num_classes=num_classes, num_experts=net.num_experts, channels=(4, 8))

    return PromptableNetwork.from_pretrained(net, build=build, in_channels=in_channels, num_classes=num_classes)


@pytest.mark.parametrize("target", [1, 2])
def test_a_prompt_free_input_reproduces_the_base_models_probability(target):
    base = pretrained().eval()
    net = promptable(base).eval()
    x = torch.randn(2, 1, *PATCH)  # [B=2, C=1, 16^3]
    expert = torch.tensor([0, 1])
    with torch.no_grad():
        want = base(x, expert).logits.softmax(1)[:, target]
        got = net(x, expert, target=torch.tensor([target, target])).logits.softmax(1)[:, 1]
        # explicit prompts: the previous-prediction channel holds the automatic probability, no prompt drawn
        prompts = torch.cat([want[:, None], torch.zeros(2, PROMPT_CHANNELS - 1, *PATCH)], 1)
        again = net(x, expert, prompts=prompts, target=target).logits.softmax(1)[:, 1]
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(again, want, atol=1e-5)


def test_binary_logits_give_the_softmax_probability_of_the_target():
    z = torch.randn(3, 4, 2, 2, 2)  # [B=3, K=4, 2^3]
    t = torch.tensor([1, 3, 2])
    p = binary_logits(z, t).softmax(1)[:, 1]
    assert torch.allclose(p, z.softmax(1)[torch.arange(3), t], atol=1e-6)


def test_the_new_input_channels_start_at_zero_and_the_rest_is_copied():
    base = pretrained()
    net = promptable(base)
    new, old = net.interactive.state_dict(), base.state_dict()
    widened = [k for k in new if new[k].shape != old[k].shape]
    assert widened and all(new[k].shape[1] == 1 + PROMPT_CHANNELS for k in widened)
    assert all(torch.equal(new[k][:, :1], old[k]) and not new[k][:, 1:].any() for k in widened)
    assert all(torch.equal(new[k], old[k]) for k in new if k not in widened)


def test_only_the_interactive_copy_trains_and_every_parameter_has_one_role():
    net = promptable(pretrained())
    groups = net.parameter_groups()
    seen = [n for g in groups.values() for n in g]
    assert sorted(seen) == sorted(n for n, _ in net.named_parameters())
    assert all(not p.requires_grad for p in net.automatic.parameters())
    out = net(torch.randn(1, 1, *PATCH), torch.tensor([1]), prompts=torch.rand(1, PROMPT_CHANNELS, *PATCH), target=2).logits
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.trainable_parameters())


def test_the_registered_network_round_trips_through_a_model_file(tmp_path):
    from experts.bundle import ModelBundle, load_bundle, save_bundle
    from experts.data.plan import Plan

    net = promptable(pretrained())
    net.add_expert_head(1)
    plan = Plan(spacing=[1.0] * 3, patch_size=list(PATCH), normalization=["zscore"], channel_names=["MR"], class_names=["background", "a", "b"], ignore_label=3, median_shape=list(PATCH))
    arch = {"name": "promptable", "kwargs": {"base": {"name": "cin_unet", "kwargs": {"channels": [4, 8]}}, "encoding": {}}}
    save_bundle(tmp_path / "m", ModelBundle(network=net, experts=["a", "b"], plan=plan, arch=arch))
    back = load_bundle(tmp_path / "m").network
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        assert torch.allclose(back(x, [1], target=1).logits, net(x, [1], target=1).logits)


def test_a_background_or_unknown_target_is_refused():
    net = promptable(pretrained())
    for bad in (0, 3):
        with pytest.raises(ValueError, match="foreground class"):
            net(torch.randn(1, 1, *PATCH), [0], target=bad)
    with pytest.raises(ValueError, match="prompts must be"):
        net(torch.randn(1, 1, *PATCH), [0], prompts=torch.zeros(1, 3, *PATCH), target=1)
    assert np.isfinite(net(torch.randn(1, 1, *PATCH), [0]).logits.detach().numpy()).all()
