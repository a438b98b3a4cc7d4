"""One contract over every registered init strategy and every trainable set."""

import pytest
import torch

from experts.adaptation import INIT_STRATEGIES, TRAINABLE_SETS, create_init, create_trainable, initial_rows, select_trainable
from experts.errors import ConfigError
from experts.networks import create_network

EXPERTS = ["a", "b", "c"]
#: parameters a strategy cannot do without; every other strategy must build from {}
REQUIRED = {"expert": {"expert": "b"}}
SCORES = {"a": 0.2, "b": 0.9, "c": 0.5}


def tiny_net():
    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=3, num_experts=3, channels=(4, 8))
    with torch.no_grad():
        for layer in net.cin_layers().values():
            layer.gamma[0].uniform_(0.5, 1.5)
            layer.beta[0].uniform_(-0.5, 0.5)
    return net


@pytest.fixture(params=INIT_STRATEGIES.names())
def init_name(request):
    return request.param


def test_every_init_strategy_gives_one_row_per_layer(init_name):
    net = tiny_net()
    strategy = create_init({"name": init_name, "params": REQUIRED.get(init_name, {})})
    rows, source = strategy(net.row_tables(), experts=EXPERTS, scores=SCORES if strategy.needs_scores else None)
    assert set(rows) == set(net.cin_layers()) and isinstance(source, str) and source
    for name, (g, b) in rows.items():
        assert g.shape == b.shape == (1, net.cin_layers()[name].channels)
    assert create_init(strategy.describe()).describe() == strategy.describe()  # the adapter file's word rebuilds it


def test_every_init_strategy_refuses_an_unknown_parameter(init_name):
    with pytest.raises(ConfigError, match=rf"adapt.init '{init_name}'.*unknown key 'zzz'"):
        create_init({"name": init_name, "params": {**REQUIRED.get(init_name, {}), "zzz": 1}})


def test_named_and_nearest_rows_copy_the_right_expert():
    net = tiny_net()
    tables = net.row_tables()
    for spec, scores in (("expert:b", None), ("nearest", SCORES)):
        rows, source = initial_rows(net, spec, experts=EXPERTS, scores=scores)
        assert source == "b" and all(torch.equal(rows[n][0], tables[n][0][1:2]) for n in tables)
    with pytest.raises(ConfigError, match="cannot initialise from expert 'z'"):
        initial_rows(net, "expert:z", experts=EXPERTS)


@pytest.fixture(params=TRAINABLE_SETS.names())
def trainable_name(request):
    return request.param


@pytest.fixture(params=[n for n in TRAINABLE_SETS.names() if n != "auto"])
def rung_name(request):
    return request.param


def test_every_rung_trains_exactly_what_it_names_and_forks_only_if_it_says_so(rung_name):
    net = tiny_net().eval()
    x = torch.randn(3, 1, 8, 8, 8)
    before = net(x, torch.tensor([0, 1, 2])).logits
    row, row_params = net.add_expert(net.expert_rows(0))
    new_before = net(x, torch.tensor([row] * 3)).logits
    chosen = create_trainable(rung_name)
    row_params, shared, forks, _ = select_trainable(net, chosen, new_row=row, row_params=row_params)
    assert torch.equal(net(x, torch.tensor([row] * 3)).logits, new_before)  # a rung starts as the model it was given
    trained = {id(p) for p in row_params + shared}
    assert {id(p) for p in net.parameters() if p.requires_grad} == trained
    assert forks == chosen.forks
    old_rows = [p for n, p in net.parameter_groups()["expert_rows"].items() if n.endswith(".0")]
    assert not any(id(p) in trained for p in old_rows)  # the pretrained rows never train
    opt = torch.optim.SGD(row_params + shared, lr=0.5)
    net(x, torch.tensor([row] * 3)).logits.square().mean().backward()
    opt.step()
    after = net(x, torch.tensor([0, 1, 2])).logits
    assert torch.equal(before, after) == (not forks)  # the other experts move only in a fork


def test_every_trainable_set_refuses_an_unknown_parameter(trainable_name):
    with pytest.raises(ConfigError, match=rf"adapt.trainable '{re_escape(trainable_name)}'.*unknown key 'zzz'"):
        create_trainable({"name": trainable_name, "params": {"zzz": 1}})


def re_escape(text):
    import re

    return re.escape(text)
