"""attentive_similarity: the Potts form with the network's own (symmetrised, normalised, masked) attention."""

import pytest
import torch

from experts.losses import LOSS_TERMS, TermContext
from experts.losses.attentive import attentive_energy
from experts.networks import create_network
from experts.records import Batch

K, IGNORE = 3, 3
CONTEXT = TermContext(ignore_label=IGNORE, num_classes=K)


def uniform_attention(b=1, heads=2, window=(3, 3, 3), spatial=(4, 4, 4)):
    return torch.full((b, heads, *window, *spatial), 1.0 / 27, dtype=torch.float64)


def test_a_constant_one_hot_prediction_costs_nothing():
    p = torch.zeros(1, K, 4, 4, 4, dtype=torch.float64)
    p[:, 1] = 1  # [1, 3, 4^3], every voxel class 1
    e = attentive_energy(uniform_attention(), p, torch.ones(1, 1, 4, 4, 4, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64), sigma_mm=2.0)
    assert e.item() == 0.0


def test_with_normalised_weights_each_unannotated_voxel_costs_its_disagreement():
    # a checkerboard of two classes: every face neighbour disagrees; with radius-1 windows and
    # tiny sigma only face neighbours keep weight, so every voxel costs exactly 1
    z, y, x = torch.meshgrid(*(torch.arange(4),) * 3, indexing="ij")
    label = (z + y + x) % 2
    p = torch.nn.functional.one_hot(label, K).permute(3, 0, 1, 2).unsqueeze(0).double()  # [1, 3, 4^3]
    e = attentive_energy(uniform_attention(), p, torch.ones(1, 1, 4, 4, 4, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64), sigma_mm=0.15)
    assert e.item() == pytest.approx(1.0)


def test_gradients_flow_into_both_the_prediction_and_the_attention():
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(2, 2, 3, 3, 1, 3, 3, 2, generator=g, dtype=torch.float64).requires_grad_()  # [B, heads, 3, 3, 1, 3, 3, 2]
    logits = torch.randn(2, K, 3, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(2, 1, 3, 3, 2, generator=g) > 0.3).double()
    sp = torch.tensor([[1.0, 1.0, 2.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, z: attentive_energy(a, z.softmax(1), mask, sp, sigma_mm=2.0), (attn, logits))


@pytest.mark.parametrize("kind", ["dense", "scribbled", "mixed"])
def test_term_trains_the_attention_block_through_the_network(kind):
    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=K, num_experts=2, channels=(4, 8, 8), features=("decoder.0", "attention"), attention={"level": 1, "heads": 2, "radius": [1, 1, 1]})
    label = torch.randint(0, K, (2, 1, 16, 16, 16))  # [2, 1, 16^3]
    if kind != "dense":
        label[1, :, 3:] = IGNORE
        if kind == "scribbled":
            label[0, :, 3:] = IGNORE
    batch = Batch(image=torch.randn(2, 1, 16, 16, 16), label=label, expert=torch.tensor([0, 1]), spacing=torch.full((2, 3), 2.0))
    parts = LOSS_TERMS.get("attentive_similarity")(CONTEXT)(net(batch.image, batch.expert), batch)
    parts["loss"].backward()
    qkv = net.parameter_groups()["attention"]["attention.qkv.weight"]
    if kind == "dense":
        assert parts["loss"].item() == 0.0
    else:
        assert parts["loss"].item() > 0 and qkv.grad.abs().sum() > 0
