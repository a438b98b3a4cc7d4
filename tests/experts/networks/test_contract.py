"""One contract over every registered network: the ConditionedNetwork protocol, shapes, gradients,
conditioning, rows and heads, state_dict."""

import pytest
import torch

from experts.networks import CIN_PLACEMENTS, NETWORKS, PROMPTABLE, ROW_ROLES, SHARED_ROLES, ConditionedNetwork, create_network
from experts.records import NetOutput

SMALL = dict(in_channels=2, num_classes=3, num_experts=3, channels=(4, 8, 16))
PATCH = (16, 16, 16)  # 3 levels: 16 -> 8 -> 4 voxels at the bottom


def build(name, **overrides):
    torch.manual_seed(0)
    net = create_network(name, **{**SMALL, **overrides})
    # Non-trivial expert rows, so that experts differ before any training.
    with torch.no_grad():
        for layer in net.cin_layers().values():
            layer.gamma[0].uniform_(0.5, 1.5)
            layer.beta[0].uniform_(-0.5, 0.5)
    return net


def logits(net, x, e):
    return net(x, torch.as_tensor(e)).logits


@pytest.fixture(params=[n for n in NETWORKS.names() if n not in PROMPTABLE])  # promptable ones: tests/experts/interactive/test_promptable.py
def name(request):
    return request.param


def test_forward_gives_an_output_record_with_logits_and_the_last_decoder_features(name):
    net = build(name)
    out = net(torch.randn(2, 2, *PATCH), torch.tensor([0, 2]))  # [B=2, C=2, 16^3] -> [2, 3, 16^3]
    assert isinstance(net, ConditionedNetwork) and isinstance(out, NetOutput)
    assert out.logits.shape == (2, 3, *PATCH) and out["logits"] is out.logits
    assert torch.isfinite(out.logits).all()
    assert set(out.features) == set(net.returned_features) == {"decoder.0"}
    assert out.features["decoder.0"].shape == (2, SMALL["channels"][0], *PATCH)


def test_requested_features_are_returned_at_their_resolution(name):
    net = build(name, features=("decoder.1", "encoder.2", "decoder.0"))
    out = net(torch.randn(1, 2, *PATCH), torch.tensor([0]))
    assert out.features["decoder.1"].shape == (1, 8, 8, 8, 8)  # half resolution, level-1 width
    assert out.features["encoder.2"].shape == (1, 16, 4, 4, 4)  # the bottleneck
    with pytest.raises(ValueError, match="unknown feature"):
        build(name, features=("decoder.7",))
    with pytest.raises(KeyError, match="add it to network.features"):
        out.feature("encoder.0")


def test_every_parameter_gets_a_gradient(name):
    net = build(name)
    out = logits(net, torch.randn(3, 2, *PATCH), [0, 1, 2])
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_parameter_groups_hold_every_parameter_exactly_once(name):
    net = build(name)
    net.add_expert_head(1)
    net.add_expert_low_rank(2, rank=2, sites=list(net.low_rank_sites(["shared_decoder"])))
    groups = net.parameter_groups()
    assert set(SHARED_ROLES) | set(ROW_ROLES) <= set(groups)
    seen = [n for g in groups.values() for n in g]
    assert sorted(seen) == sorted(n for n, _ in net.named_parameters())  # none missing, none twice
    assert all(g for role, g in groups.items())  # every role of this network holds something
    assert all(n.startswith("expert_heads.1.") for n in groups["expert_heads"])
    shared = {id(p) for p in net.shared_parameters()}
    assert not shared & {id(p) for role in ROW_ROLES for p in groups[role].values()}


def test_two_experts_give_different_outputs(name):
    net = build(name).eval()
    x = torch.randn(1, 2, *PATCH)
    assert (logits(net, x, [0]) - logits(net, x, [1])).abs().max() > 1e-4


def test_unused_expert_row_gets_no_gradient(name):
    net = build(name)
    logits(net, torch.randn(2, 2, *PATCH), [0, 2]).square().mean().backward()  # row 1 unused
    for layer in net.cin_layers().values():
        assert torch.all(layer.gamma[0].grad[1] == 0) and torch.all(layer.beta[0].grad[1] == 0)
        assert layer.gamma[0].grad[0].abs().sum() > 0


def test_added_expert_copies_rows_and_leaves_the_others_alone(name):
    net = build(name).eval()
    x = torch.randn(1, 2, *PATCH)
    before = logits(net, x, [1])
    row, params = net.add_expert(net.expert_rows(1))
    assert row == 3 and net.num_experts == 4 and len(params) == 2 * len(net.cin_layers())
    assert torch.equal(logits(net, x, [row]), before)  # a copy of expert 1's rows predicts as expert 1
    assert torch.equal(logits(net, x, [1]), before)
    with pytest.raises(ValueError, match="do not match"):
        net.add_expert({"nope": params[:2]})


def test_removing_an_expert_shifts_the_later_rows_and_heads(name):
    net = build(name).eval()
    x = torch.randn(1, 2, *PATCH)
    net.add_expert_head(2)
    with torch.no_grad():
        for p in net.parameter_groups()["expert_heads"].values():
            p.add_(0.5)  # expert 2's head differs from the shared one
    expected = logits(net, x, [2])
    net.remove_expert(1)
    assert net.num_experts == 2 and net.expert_head_rows() == [1]
    assert torch.allclose(logits(net, x, [1]), expected, atol=1e-6)
    with pytest.raises(ValueError, match="not an expert"):
        net.remove_expert(5)


def test_a_private_head_changes_only_its_expert(name):
    net = build(name).eval()
    x = torch.randn(2, 2, *PATCH)
    shared = logits(net, x, [0, 1])
    params = net.add_expert_head(1)
    with torch.no_grad():
        for p in params:
            p.mul_(2.0)
    out = logits(net, x, [0, 1])
    assert torch.equal(out[0], shared[0]) and not torch.allclose(out[1], shared[1])
    state = net.expert_head_state(1)
    other = build(name).eval()
    other.add_expert_head(1, state)
    assert torch.equal(logits(other, x, [0, 1]), out)


def test_a_zero_initialised_low_rank_residual_reproduces_the_model_bit_for_bit(name):
    net = build(name).eval()
    x = torch.randn(3, 2, *PATCH)
    before = logits(net, x, [0, 1, 2])
    sites = net.low_rank_sites(["shared_decoder"])
    assert sites and not set(sites) & set(net.low_rank_sites(["shared_encoder"]))
    params = net.add_expert_low_rank(1, rank=2, sites=list(sites))
    assert torch.equal(logits(net, x, [0, 1, 2]), before)
    with torch.no_grad():
        for p in params:
            p.normal_(0.0, 0.3)
    out = logits(net, x, [0, 1, 2])
    assert torch.equal(out[0], before[0]) and torch.equal(out[2], before[2]) and not torch.allclose(out[1], before[1])
    other = build(name).eval()
    other.add_expert_low_rank(1, state=net.expert_low_rank_state(1))
    assert torch.equal(logits(other, x, [0, 1, 2]), out)  # its state alone rebuilds it
    assert net.expert_low_rank_rows() == {1: list(sites)}
    net.remove_expert(0)
    assert net.expert_low_rank_rows() == {0: list(sites)} and torch.allclose(logits(net, x[1:2], [0])[0], out[1], atol=1e-5)


def test_an_existing_experts_row_becomes_a_parameter_of_its_own(name):
    net = build(name).eval()
    x = torch.randn(3, 2, *PATCH)
    before = logits(net, x, [0, 1, 2])
    params = net.expert_row_parameters(1)
    assert len(params) == 2 * len(net.cin_layers()) and all(p.shape[0] == 1 for p in params)
    assert torch.equal(logits(net, x, [0, 1, 2]), before)  # splitting the table changes nothing
    with torch.no_grad():
        for p in params:
            p.add_(0.25)
    after = logits(net, x, [0, 1, 2])
    assert torch.equal(after[[0, 2]], before[[0, 2]]) and not torch.equal(after[1], before[1])


def test_merged_row_blocks_predict_the_same(name):
    net = build(name).eval()
    x = torch.randn(1, 2, *PATCH)
    row, _ = net.add_expert(net.expert_rows(0))
    before = logits(net, x, [row])
    net.merge_row_blocks()
    assert all(len(layer.gamma) == 1 for layer in net.cin_layers().values())
    assert torch.equal(logits(net, x, [row]), before)


def test_state_dict_round_trip_reproduces_outputs(name, tmp_path):
    net = build(name).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    other = create_network(name, **SMALL).eval()
    other.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    x, e = torch.randn(2, 2, *PATCH), torch.tensor([1, 2])
    assert torch.equal(logits(net, x, e), logits(other, x, e))


def test_batch_mixes_experts_independently(name):
    net = build(name).eval()
    x = torch.randn(1, 2, *PATCH)
    both = logits(net, x.expand(2, -1, -1, -1, -1), [0, 1])
    assert torch.allclose(both[1:], logits(net, x, [1]), atol=1e-5)


def test_prompts_are_refused_by_a_network_without_prompt_channels(name):
    net = build(name)
    assert net.prompt_channels == 0
    with pytest.raises(ValueError, match="takes no prompts"):
        net(torch.randn(1, 2, *PATCH), torch.tensor([0]), prompts=torch.zeros(1, 1, *PATCH))


def test_patch_too_small_for_depth_is_refused(name):
    net = build(name)
    assert net.divisor == 4
    with pytest.raises(ValueError, match="at least 8 voxels"):
        net.check_input_size((16, 16, 4))
    net.check_input_size(PATCH)


@pytest.mark.parametrize("placement", CIN_PLACEMENTS)
def test_cin_placement_conditions_only_its_part(placement):
    net = build("cin_unet", cin=placement)
    rows = net.parameter_groups()["expert_rows"]
    enc, dec = any(n.startswith("encoder.") for n in rows), any(n.startswith("decoder.") for n in rows)
    assert (enc, dec) == {"all": (True, True), "encoder": (True, False), "decoder": (False, True)}[placement]


@pytest.mark.parametrize("placement", CIN_PLACEMENTS)
def test_every_expert_at_once_equals_one_pass_per_expert(name, placement):
    net = build(name, cin=placement).eval()
    x = torch.randn(2, 2, *PATCH)
    with torch.no_grad():
        together = net.expert_logits(x, torch.tensor([2, 0, 1]))  # [B=2, E=3, K=3, 16^3]
        apart = torch.stack([logits(net, x, [r, r]) for r in (2, 0, 1)], dim=1)
    assert together.shape == (2, 3, 3, *PATCH)
    assert torch.allclose(together, apart, atol=1e-5)
