"""Predictions come back on the input's own grid, whatever its orientation and spacing."""

import nibabel as nib
import numpy as np
import torch

from experts.bundle import ModelBundle
from experts.data.nifti import save_volume
from experts.data.plan import Plan
from experts.predictor import disagreement, predict_case
from experts.networks import ConditionedNetwork
from experts.records import NetOutput


class ThresholdNet(ConditionedNetwork):
    """Logits [-x, x]: class 1 where the (normalised) intensity is positive; expert e shifts by e."""

    def forward(self, image, expert):
        x = image[:, :1] - expert.view(-1, 1, 1, 1, 1).float()
        return NetOutput(logits=torch.cat([-x, x], dim=1))


def oblique_affine():
    """30 degrees about z and 10 about x, spacing (0.8, 1.1, 2.5) mm, LPS-like flips."""
    a, b = np.deg2rad(30), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1, -1, 1]) @ rz @ rx @ np.diag([0.8, 1.1, 2.5])
    aff[:3, 3] = [12.0, -30.0, 7.5]
    return aff


def make_bundle():
    plan = Plan(spacing=[1.5, 1.5, 1.5], patch_size=[16, 16, 16], normalization=["none"], channel_names=["MR"], class_names=["background", "blob"], ignore_label=None, median_shape=[32, 32, 16])
    return ModelBundle(network=ThresholdNet(), experts=["a", "b"], plan=plan, arch={"name": "test"})


def test_prediction_has_the_input_shape_and_affine_on_an_oblique_anisotropic_image(tmp_path):
    shape = (30, 26, 9)  # [X, Y, Z]
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    world = grid @ oblique_affine()[:3, :3].T + oblique_affine()[:3, 3]
    centre = oblique_affine()[:3, :3] @ (np.array(shape) / 2) + oblique_affine()[:3, 3]
    image = (9.0 - np.linalg.norm(world - centre, axis=-1)).astype(np.float32)  # positive inside a 9 mm ball
    path = save_volume(tmp_path / "c_0000.nii.gz", image, oblique_affine())
    pred = predict_case(make_bundle(), [path], ["a"], overlap=0.5, sw_batch_size=2)
    labels = pred.labels()[0]
    assert labels.shape == shape
    np.testing.assert_array_equal(pred.affine, nib.load(str(path)).affine)
    truth = image > 0
    agreement = (labels.astype(bool) == truth).mean()
    assert agreement > 0.97, agreement  # resampling there and back blurs only the boundary
    inside = np.argwhere(truth).mean(0)
    assert np.abs(np.argwhere(labels.astype(bool)).mean(0) - inside).max() < 1.0  # same place, not flipped


def test_all_experts_come_from_one_pass_in_their_order(tmp_path):
    image = np.linspace(-3, 3, 20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20)
    path = save_volume(tmp_path / "c_0000.nii.gz", image, np.diag([1.5, 1.5, 1.5, 1]))
    both = predict_case(make_bundle(), [path], ["a", "b"])
    only_b = predict_case(make_bundle(), [path], ["b"])
    np.testing.assert_allclose(both.probabilities[1], only_b.probabilities[0], atol=1e-5)
    assert both.labels()[0].sum() > both.labels()[1].sum()  # expert b's threshold is higher


def test_disagreement_is_zero_when_experts_agree_and_log_e_at_most():
    same = np.tile(np.array([0.2, 0.8]).reshape(1, 2, 1), (3, 1, 4))  # [E=3, K=2, N=4]
    assert np.allclose(disagreement(same), 0, atol=1e-6)
    split = np.stack([np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]])])  # two experts, opposite certainty
    assert np.isclose(disagreement(split)[0], np.log(2), atol=1e-4)

