"""Loss terms: one contract over every registered term, and the weighted, scheduled sum of terms."""

import pytest
import torch

from experts.errors import ConfigError
from experts.losses import LOSS_TERMS, LossTerm, TermContext, TermSpec, TrainingLoss, build_loss
from experts.networks import create_network
from experts.records import Batch, NetOutput, collate_batch

K, IGNORE = 3, 3
CONTEXT = TermContext(ignore_label=IGNORE, num_classes=K, spacing=(1.0, 1.0, 2.0))


def toy_batch(b=2, n=16, seed=0):
    """[B=2, C=1, 16^3] image, labels with half the slices unannotated."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, K, (b, 1, n, n, n), generator=g)
    label[..., ::2] = IGNORE
    return Batch(image=torch.randn(b, 1, n, n, n, generator=g), label=label, expert=torch.tensor([0, 1][:b]), spacing=torch.tensor([[1.0, 1.0, 2.0]] * b))


def network_output(batch):
    """Every feature any term reads: the last decoder level, the bottleneck and the attention of a
    block at level 0 (terms that read no feature ignore the block)."""
    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=K, num_experts=2, channels=(4, 8), features=("decoder.0", "encoder.1", "attention"), attention={"level": 0, "heads": 2, "radius": [1, 1, 1]})
    return net(batch.image, batch.expert)


@pytest.fixture(params=LOSS_TERMS.names())
def term_name(request):
    return request.param


def test_every_term_gives_a_finite_scalar_with_gradient_and_detached_parts(term_name):
    batch = toy_batch()
    out = network_output(batch)
    term = LOSS_TERMS.get(term_name)(CONTEXT)
    assert isinstance(term, LossTerm) and term.name == term_name
    parts = term(out, batch)
    assert parts["loss"].ndim == 0 and torch.isfinite(parts["loss"])
    parts["loss"].backward()
    assert all(not torch.as_tensor(v).requires_grad for k, v in parts.items() if k != "loss")


def test_every_term_refuses_an_unknown_parameter_naming_itself_and_the_key(term_name):
    with pytest.raises(ConfigError, match=rf"loss term '{term_name}'.*unknown key 'not_a_param'"):
        LOSS_TERMS.get(term_name)(CONTEXT, not_a_param=1)


def test_every_term_state_round_trips_through_a_weights_only_file(term_name, tmp_path):
    batch = toy_batch()
    term = LOSS_TERMS.get(term_name)(CONTEXT)
    term(network_output(batch), batch)
    torch.save(term.state_dict(), tmp_path / "s.pt")
    other = LOSS_TERMS.get(term_name)(CONTEXT)
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(term.state_dict().values(), other.state_dict().values()))


def test_every_term_declares_only_features_a_network_can_return(term_name):
    net = create_network("cin_unet", in_channels=1, num_classes=K, num_experts=1, channels=(4, 8), attention={"level": 0, "heads": 2})
    assert set(LOSS_TERMS.get(term_name).features) <= set(net.feature_names)


def test_the_default_term_gives_the_partial_loss_of_the_logits():
    from experts.losses import PartialDiceCELoss

    batch = toy_batch()
    out = network_output(batch)
    expected = PartialDiceCELoss(ignore_label=IGNORE, dice_weight=0.5)(out.logits, batch.label)
    parts = build_loss([{"name": "partial_dice_ce", "params": {"dice_weight": 0.5}}], CONTEXT)(out, batch)
    assert torch.equal(parts["loss"], expected["loss"])
    assert torch.equal(parts["partial_dice_ce/ce"], expected["ce"]) and torch.equal(parts["partial_dice_ce"], expected["loss"].detach())


@pytest.mark.parametrize(
    "spec, expected",  # weight at steps 0..5
    [
        (TermSpec(weight=2.0), [2.0] * 6),
        (TermSpec(weight=2.0, start_step=3), [0, 0, 0, 2.0, 2.0, 2.0]),
        (TermSpec(weight=1.0, start_step=1, ramp_steps=4), [0, 0.25, 0.5, 0.75, 1.0, 1.0]),
    ],
)
def test_term_weight_is_zero_before_its_start_then_ramps_linearly(spec, expected):
    assert [spec.weight_at(s) for s in range(6)] == pytest.approx(expected)


class Constant(LossTerm):
    """A term whose loss is the mean logit times ``scale`` (and counts its calls)."""

    name = "constant"

    def __init__(self, context, scale=1.0):
        super().__init__(context)
        self.scale = scale
        self.calls = 0

    def forward(self, outputs, batch):
        self.calls += 1
        return {"loss": self.scale * outputs.logits.mean(), "seen": torch.tensor(float(batch.size))}


def test_the_sum_weights_each_term_and_skips_terms_not_yet_started():
    logits = torch.ones(2, K, 4, 4, 4, requires_grad=True)
    out, batch = NetOutput(logits=logits), toy_batch(n=4)
    a = Constant(CONTEXT)
    b = Constant(CONTEXT, scale=10.0)
    b.name = "late"
    loss = TrainingLoss([(a, TermSpec(weight=0.5)), (b, TermSpec(weight=1.0, start_step=2))])
    early = loss(out, batch, step=0)
    assert early["loss"].item() == pytest.approx(0.5) and "late" not in early and b.calls == 0
    late = loss(out, batch, step=2)
    assert late["loss"].item() == pytest.approx(0.5 + 10.0) and late["late/seen"].item() == 2.0
    late["loss"].backward()
    assert logits.grad is not None


def test_a_term_needing_a_feature_the_network_does_not_return_is_refused():
    class NeedsBottleneck(Constant):
        name = "needs_bottleneck"
        features = ("encoder.3",)

    LOSS_TERMS._factories["needs_bottleneck"] = NeedsBottleneck
    try:
        with pytest.raises(ConfigError, match="need network feature.*encoder.3.*add them to network.features"):
            build_loss([{"name": "needs_bottleneck"}], CONTEXT, network_features=("decoder.0",))
    finally:
        del LOSS_TERMS._factories["needs_bottleneck"]


def test_unknown_term_and_duplicate_terms_are_refused():
    with pytest.raises(ConfigError, match="unknown loss term 'nope'; known: .*partial_dice_ce"):
        build_loss([{"name": "nope"}], CONTEXT)
    with pytest.raises(ConfigError, match="twice"):
        build_loss([{"name": "partial_dice_ce"}, {"name": "partial_dice_ce"}], CONTEXT)


def test_collate_stacks_samples_into_a_batch_record():
    samples = [{"image": torch.zeros(1, 4, 4, 4), "label": torch.ones(1, 4, 4, 4), "expert": torch.tensor(i), "spacing": torch.tensor([1.0, 1.0, 2.5])} for i in range(3)]
    batch = collate_batch(samples)
    assert batch.image.shape == (3, 1, 4, 4, 4) and batch.label.dtype == torch.long
    assert batch.expert.tolist() == [0, 1, 2] and batch.spacing.shape == (3, 3) and batch.prompts is None
    assert batch["spacing"] is batch.spacing and set(batch.keys()) == {"image", "label", "expert", "spacing", "prompts", "target"}


def test_a_term_that_becomes_nan_stops_the_step_with_its_name():
    from experts.losses import TermError

    class Exploding(Constant):
        name = "exploding"

        def forward(self, outputs, batch):
            return {"loss": outputs.logits.mean() * float("nan")}

    out, batch = NetOutput(logits=torch.ones(2, K, 4, 4, 4, requires_grad=True)), toy_batch(n=4)
    loss = TrainingLoss([(Constant(CONTEXT), TermSpec()), (Exploding(CONTEXT), TermSpec(start_step=1))])
    assert torch.isfinite(loss(out, batch, step=0)["loss"])
    with pytest.raises(TermError, match="loss term 'exploding' became nan at step 2; the run stopped and its last good checkpoint is kept"):
        loss(out, batch, step=1)
