"""Partial losses agree with nnU-Net v2's ignore-label loss (tests/fixtures/partial_losses.json)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss

from experts.losses import PartialDiceCELoss, partial_soft_dice

REF = json.loads((Path(__file__).parents[2] / "fixtures" / "partial_losses.json").read_text())
TOL = REF["tolerance_abs"]
IGNORE = REF["inputs"]["ignore_label"]


def base_inputs():
    """Closed-form inputs of the reference file: logits [2,3,4,5,6], target [2,1,4,5,6]."""
    b, c, x, y, z = REF["inputs"]["shape_BCXYZ"]
    i = np.arange(b * c * x * y * z, dtype=np.float64)
    logits = (3 * np.sin(0.37 * i) + 0.5 * np.cos(1.3 * i)).reshape(b, c, x, y, z)
    j = np.arange(b * x * y * z)
    target = ((7 * j + 3) % 5).reshape(b, 1, x, y, z)
    target[target >= 3] = IGNORE
    return torch.tensor(logits), torch.tensor(target)


def case_inputs(name):
    logits, target = base_inputs()
    if name.startswith("sample0_fully_ignored"):
        target[0] = IGNORE
    elif name.startswith("all_ignored"):
        target[:] = IGNORE
    elif name.startswith("unequal_annotation"):
        target[1, :, 1:] = IGNORE
    return logits, target


@pytest.mark.parametrize("name", sorted(REF["cases"]))
def test_loss_matches_nnunet_reference(name):
    expected = REF["cases"][name]
    logits, target = case_inputs(name)
    loss = PartialDiceCELoss(ignore_label=IGNORE, batch_dice=name.endswith("batch_dice_true"))
    out = loss(logits, target)
    assert abs(out["loss"].item() - expected["total"]) < TOL
    if "ce" in expected:
        assert abs(out["ce"].item() - expected["ce"]) < TOL
    if "dice_term" in expected:
        assert abs(out["dice"].item() - expected["dice_term"]) < TOL


def test_dice_loss_is_not_the_mask_before_softmax_pitfall():
    logits, target = base_inputs()
    term, _ = partial_soft_dice(logits, target, ignore_label=IGNORE)
    dice_loss = 1 + term.item()  # MONAI's form: 1 - mean(dc)
    pit = REF["pitfall"]
    assert abs(dice_loss - pit["correct_dice_loss_batch_dice_false"]) < TOL
    assert abs(dice_loss - pit["legacy_dice_loss_mask_before_softmax_batch_dice_false"]) > 1e-3


def test_dice_term_agrees_with_monai_dice_loss_ignore_index():
    logits, target = base_inputs()
    term, _ = partial_soft_dice(logits, target, ignore_label=IGNORE)
    monai = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, ignore_index=IGNORE, smooth_nr=1e-5, smooth_dr=1e-5)
    assert abs((1 + term.item()) - monai(logits, target).item()) < TOL


def test_ignored_voxels_get_no_gradient():
    logits, target = base_inputs()
    logits.requires_grad_(True)
    PartialDiceCELoss(ignore_label=IGNORE)(logits, target)["loss"].backward()
    ignored = (target == IGNORE).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert torch.any(logits.grad[~ignored] != 0)


def test_fully_ignored_batch_gives_finite_loss_and_zero_gradient():
    logits, target = base_inputs()
    target[:] = IGNORE
    logits.requires_grad_(True)
    out = PartialDiceCELoss(ignore_label=IGNORE)(logits, target)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["ce"].item() == 0.0
    assert torch.all(logits.grad == 0)


def test_dense_and_partial_labels_mix_in_one_batch():
    # sample 0 dense, sample 1 partial: [2,3,4,5,6]
    logits, target = base_inputs()
    target[0][target[0] == IGNORE] = 0
    out = PartialDiceCELoss(ignore_label=IGNORE)(logits, target)
    annotated = (target != IGNORE).float().mean().item()
    assert 0.5 < annotated < 1.0
    assert out["annotated_fraction"].item() == pytest.approx(annotated)


def test_without_ignore_label_every_voxel_counts():
    logits, target = base_inputs()
    target[target == IGNORE] = 0
    a = PartialDiceCELoss(ignore_label=None)(logits, target)["loss"]
    b = PartialDiceCELoss(ignore_label=IGNORE)(logits, target)["loss"]
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_mismatched_shapes_are_refused():
    logits, target = base_inputs()
    with pytest.raises(ValueError, match="do not match"):
        PartialDiceCELoss(ignore_label=IGNORE)(logits, target[..., :3])


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("ignore", [IGNORE, None])
def test_the_fused_loss_matches_the_composed_functions_with_their_gradients(batch_dice, ignore):
    """[B=2, K=3, 4x5x6] float64: values and gradients of the fast path equal autograd's on the
    composed partial CE and soft Dice (weights 0.7 and 1.3)."""
    from experts.losses import partial_cross_entropy

    logits, target = case_inputs("unequal_annotation_batch_dice_false")
    if ignore is None:
        target = target.clamp_max(2)
    a = logits.clone().requires_grad_(True)
    fused = PartialDiceCELoss(ignore_label=ignore, ce_weight=0.7, dice_weight=1.3, batch_dice=batch_dice)(a, target)
    fused["loss"].backward()
    b = logits.clone().requires_grad_(True)
    composed = 0.7 * partial_cross_entropy(b, target, ignore_label=ignore) + 1.3 * partial_soft_dice(b, target, ignore_label=ignore, batch_dice=batch_dice)[0]
    composed.backward()
    assert torch.allclose(fused["loss"], composed, atol=1e-12)
    assert torch.allclose(a.grad, b.grad, atol=1e-12)
    assert not fused["ce"].requires_grad and not fused["dice"].requires_grad
