"""shape_prior: cross-entropy towards the prediction's largest connected component per class."""

import numpy as np
import pytest
import torch

from experts.losses import LOSS_TERMS, TermContext
from experts.losses.shape_prior import largest_component_target
from experts.records import Batch, NetOutput

K, IGNORE = 3, 3
CONTEXT = TermContext(ignore_label=IGNORE, num_classes=K)


def logits_of(label, scale=4.0):
    """Logits whose argmax is ``label [B, D, H, W]``: ``[B, K, D, H, W]``."""
    return (scale * torch.nn.functional.one_hot(label, K).permute(0, 4, 1, 2, 3).double()).requires_grad_()


def batch_of(label, annotated=None):
    full = torch.full((label.shape[0], 1, *label.shape[1:]), IGNORE)
    if annotated is not None:
        full[:, 0][annotated] = label[annotated]
    return Batch(image=torch.zeros(full.shape), label=full, expert=torch.zeros(label.shape[0], dtype=torch.long), spacing=torch.ones(label.shape[0], 3))


def two_blobs():
    label = torch.zeros(1, 8, 8, 8, dtype=torch.long)  # [1, 8^3]
    label[0, 1:5, 1:5, 1:5] = 1  # 64 voxels
    label[0, 6:8, 6:8, 6:8] = 1  # 8 voxels, a second component
    label[0, 2:4, 2:4, 2:4] = 2  # class 2 inside the big blob, one component
    return label


def test_a_single_blob_per_class_costs_nothing():
    label = two_blobs()
    label[0, 6:8, 6:8, 6:8] = 0
    parts = LOSS_TERMS.get("shape_prior")(CONTEXT)(NetOutput(logits=logits_of(label)), batch_of(label))
    assert parts["loss"].item() == 0.0 and parts["changed_fraction"].item() == 0.0


def test_a_second_component_is_pushed_to_the_background():
    label = two_blobs()
    logits = logits_of(label)
    parts = LOSS_TERMS.get("shape_prior")(CONTEXT)(NetOutput(logits=logits), batch_of(label))
    parts["loss"].backward()
    assert parts["changed_fraction"].item() == pytest.approx(8 / 512)
    assert (logits.grad[0, 0, 6:, 6:, 6:] < 0).all()  # descending raises the background there
    assert not logits.grad[0, :, :6, :6, :6].any()  # the kept component is left alone


def test_only_unannotated_voxels_count():
    label = two_blobs()
    annotated = torch.zeros(1, 8, 8, 8, dtype=torch.bool)
    annotated[0, 5:, 5:, 5:] = True  # the small blob is scribbled as class 1: the scribble wins
    parts = LOSS_TERMS.get("shape_prior")(CONTEXT)(NetOutput(logits=logits_of(label)), batch_of(label, annotated))
    assert parts["loss"].item() == 0.0


def test_largest_component_target_on_a_tiny_volume():
    a = np.zeros((1, 1, 7), dtype=np.int64)
    a[0, 0] = [1, 1, 0, 1, 2, 0, 2]
    assert largest_component_target(a, 3)[0, 0].tolist() == [1, 1, 0, 0, 2, 0, 0]  # ties keep the first


def test_gradient_matches_finite_differences():
    label = two_blobs()[:, :, :, :8]
    logits = (logits_of(label, scale=2.0).detach() + 0.1 * torch.randn(1, K, 8, 8, 8, dtype=torch.float64)).requires_grad_()
    term = LOSS_TERMS.get("shape_prior")(CONTEXT)
    batch = batch_of(label)
    assert torch.autograd.gradcheck(lambda z: term(NetOutput(logits=z), batch)["loss"], (logits,))
