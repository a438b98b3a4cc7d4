"""Training with simulated interaction: prompts, rounds, binary labels; a short toy training obeys a click."""

import numpy as np
import torch

from experts.bundle import ModelBundle
from experts.data.plan import Plan
from experts.interactive.building import promptable_bundle
from experts.interactive.prompts import Prompt, render_prompts
from experts.interactive.simulate import InteractionSimulator, interactive_batches
from experts.networks import create_network
from experts.records import Batch


def bundle(num_classes=3):
    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=num_classes, num_experts=2, channels=(4, 8))
    plan = Plan(spacing=[1.0] * 3, patch_size=[16] * 3, normalization=["none"], channel_names=["MR"], class_names=["background", "a", "b"][:num_classes], ignore_label=num_classes, median_shape=[16] * 3)
    return promptable_bundle(ModelBundle(network=net, experts=["x", "y"], plan=plan, arch={"name": "cin_unet", "kwargs": {"channels": [4, 8]}}))


def blobs(rng, n=2, shape=(16, 16, 16)):
    """[n, 1, 16^3] images with a bright compact blob each and its label (class 1)."""
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    images, labels = [], []
    for _ in range(n):
        c = rng.uniform(5, 11, 3)
        lab = (np.linalg.norm(g - c, axis=-1) < rng.uniform(2.5, 4)).astype(np.int64)
        images.append(lab + rng.normal(0, 0.3, shape))
        labels.append(lab)
    return torch.tensor(np.array(images), dtype=torch.float32)[:, None], torch.tensor(np.array(labels))[:, None]


def test_prompt_channels_follow_nninteractives_layout_and_older_prompts_fade():
    region = (slice(0, 8),) * 3
    drawn = render_prompts([Prompt("click", [[2, 2, 2]], positive=False), Prompt("box", [[4, 4, 4], [6, 6, 6]])], region)
    assert drawn.shape == (6, 8, 8, 8)  # box+, box-, click+, click-, scribble+, scribble-
    assert drawn[0, 5, 5, 5] == 1.0 and drawn[3, 2, 2, 2] == np.float32(0.98) and drawn[[1, 2, 4, 5]].max() == 0


def test_a_simulated_batch_holds_prompts_a_target_and_a_binary_label_with_ignore_kept():
    net = bundle().network
    rng = np.random.default_rng(0)
    image, label = blobs(rng)
    label[1, 0, :, :, :8] = 3  # a partial label: half unannotated
    batch = Batch(image=image, label=label, expert=torch.tensor([0, 1]), spacing=torch.ones(2, 3))
    sim = InteractionSimulator(rounds=2, no_prompt=0.0)
    out = sim.simulate(net, batch, rng=np.random.default_rng(1), num_classes=3)
    assert out.prompts.shape == (2, 7, 16, 16, 16) and out.target.tolist() == [1, 1]
    assert set(out.label.unique().tolist()) <= {0, 1, 2} and (out.label[1, 0, :, :, :8] == 2).all()
    assert out.prompts[:, 1:].amax(dim=(2, 3, 4)).sum() > 0  # some prompt was drawn for each sample
    again = sim.simulate(net, batch, rng=np.random.default_rng(1), num_classes=3)
    assert torch.equal(again.prompts, out.prompts)  # same generator, same prompts


def test_other_prior_starts_the_previous_prediction_from_another_experts_automatic_answer():
    net = bundle().network
    with torch.no_grad():  # two rows that answer differently
        for layer in net.automatic.cin_layers().values():
            layer.beta[0][1] += 1.5
    image, label = blobs(np.random.default_rng(0))
    batch = Batch(image=image, label=label, expert=torch.tensor([0, 1]), spacing=torch.ones(2, 3))
    target = torch.tensor([1, 1])
    own = net.automatic_probability(image, batch.expert, target)
    swapped = net.automatic_probability(image, torch.tensor([1, 0]), target)
    assert not torch.allclose(own, swapped)
    assert torch.equal(InteractionSimulator(other_prior=0.0).prior(net, batch, target, rng=np.random.default_rng(0)), own)
    assert torch.equal(InteractionSimulator(other_prior=1.0).prior(net, batch, target, rng=np.random.default_rng(0)), swapped)


def test_after_a_short_toy_training_a_positive_click_inside_a_missed_blob_turns_it_on():
    from experts.interactive.session import InteractiveSession
    from experts.losses import TermContext, build_loss
    from experts.training.loop import fit

    b = bundle(num_classes=2)
    net = b.network
    with torch.no_grad():  # the automatic model misses every blob
        [p for p in net.automatic.parameter_groups()["head"].values() if p.ndim == 1][0].copy_(torch.tensor([6.0, -6.0]))
    rng = np.random.default_rng(0)
    data = [blobs(rng, n=4) for _ in range(60)]
    batches = (Batch(image=i, label=l, expert=torch.tensor([0, 1, 0, 1]), spacing=torch.ones(4, 3)) for i, l in data)
    sim = InteractionSimulator(rounds=1, no_prompt=0.0, first=("clicks",))
    loss = build_loss([{"name": "partial_dice_ce"}], TermContext(ignore_label=2, num_classes=2, spacing=(1.0, 1.0, 1.0)), network_features=net.returned_features)
    opt = torch.optim.Adam(net.trainable_parameters(), lr=0.01)
    fit(model=net, loss_fn=loss, optimizers=[opt], schedules=[], batches=interactive_batches(batches, net, sim, num_classes=2, seed=0), start_step=0, steps=60, device=torch.device("cpu"), progress=False)
    image, label = blobs(np.random.default_rng(7), n=1)
    session = InteractiveSession(b, image[0, 0].numpy(), "x")
    truth = label[0, 0].numpy().astype(bool)
    assert session.mask().sum() == 0
    centre = np.argwhere(truth).mean(0).round().astype(int)
    session.click(centre.tolist())
    mask = session.mask().astype(bool)
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert mask[tuple(centre)] and dice > 0.5
