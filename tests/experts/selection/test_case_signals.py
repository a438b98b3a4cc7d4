"""What the strategies see, computed from images and the existing experts' rows: a toy dataset where
one case is made to be where the experts disagree, and one with two identical images."""

import json

import numpy as np
import pytest
import torch

from experts.bundle import ModelBundle
from experts.data.manifest import scan_dataset
from experts.data.nifti import save_volume
from experts.data.plan import Plan
from experts.errors import ConfigError, DatasetError
from experts.inference import predict_experts, predict_experts_with_features
from experts.networks import ConditionedNetwork, create_network
from experts.records import NetOutput
from experts.selection import bottleneck_feature, candidate_cases, case_signals, network_with_features, suggest_cases

SHAPE = (16, 16, 16)
PLAN = Plan(spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16], normalization=["none"], channel_names=["MR"], class_names=["background", "core"], ignore_label=2, median_shape=list(SHAPE))


class ThresholdNet(ConditionedNetwork):
    """Expert ``e`` calls a voxel foreground where the image exceeds ``thresholds[e]``: experts agree
    on clearly dark or bright voxels and disagree on intermediate ones.

    ``forward(image [B, 1, D, H, W], expert [B]) -> logits [B, 2, D, H, W]``.
    """

    def __init__(self, thresholds, sharpness=40.0):
        super().__init__()
        self.thresholds = torch.nn.Parameter(torch.tensor(thresholds))
        self.sharpness = sharpness

    def forward(self, image, expert, *, prompts=None):
        expert = self._conditioning(image, expert, prompts)
        fg = self.sharpness * (image[:, :1] - self.thresholds[expert].view(-1, 1, 1, 1, 1))
        return NetOutput(logits=torch.cat([torch.zeros_like(fg), fg], dim=1))


def write_dataset(root, images: dict, *, doctor_labels=()):
    """A one-channel dataset of ``images`` (case -> array): experts a, b, c label every case;
    the new doctor ``newdoc`` labels ``doctor_labels``."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for case, image in images.items():
        save_volume(root / "imagesTr" / f"{case}_0000.nii.gz", image.astype(np.float32), affine)
        for e in ("a", "b", "c"):
            save_volume(root / "labelsTr" / e / f"{case}.nii.gz", (image > 0.5).astype(np.uint8), affine)
    for case in doctor_labels:
        save_volume(root / "labelsTr" / "newdoc" / f"{case}.nii.gz", (images[case] > 0.6).astype(np.uint8), affine)
    experts = {e: {"description": e} for e in ("a", "b", "c")} | ({"newdoc": {"role": "new"}} if doctor_labels else {})
    spec = {"name": "ToySelection", "channel_names": {"0": "MR"}, "labels": {"background": 0, "core": 1, "ignore": 2}, "file_ending": ".nii.gz", "experts": experts}
    (root / "dataset.json").write_text(json.dumps(spec))
    return scan_dataset(root)


def sphere(radius, *, blur=0.0, seed=0):
    """A bright ball ``[16, 16, 16]`` in [0, 1]; ``blur`` mm widens its edge into a long ramp of
    intermediate values (where thresholding experts disagree)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    r = np.linalg.norm(grid - 7.5, axis=-1)
    edge = np.clip((radius - r) / max(blur, 1e-3) + 0.5, 0, 1) if blur else (r < radius).astype(float)
    return edge + np.random.default_rng(seed).normal(0, 0.02, SHAPE)


@pytest.fixture
def disagreement_data(tmp_path):
    images = {f"sharp{i}": sphere(4 + i, seed=i) for i in range(4)}
    images["blurred"] = sphere(5, blur=5.0, seed=9)  # constructed: a wide band of intermediate intensities
    manifest = write_dataset(tmp_path / "d", images, doctor_labels=["sharp0"])
    bundle = ModelBundle(network=ThresholdNet([0.3, 0.5, 0.7, 0.5]), experts=["a", "b", "c", "newdoc"], plan=PLAN, arch={"name": "threshold"})
    return manifest, bundle


def test_disagreement_ranks_first_the_case_constructed_for_the_experts_to_disagree_on(disagreement_data):
    manifest, bundle = disagreement_data
    candidates, labelled = candidate_cases(manifest, "newdoc", "all")
    suggestion = suggest_cases(bundle, manifest, expert="newdoc", k=2, strategy="disagreement", candidates=candidates, labelled=labelled)
    assert suggestion.cases[0] == "blurred"
    scores = {r.case: r.score for r in suggestion.ranking}
    assert scores["blurred"] > 5 * max(v for c, v in scores.items() if c != "blurred")
    assert suggestion.experts == ["a", "b", "c"]  # the doctor's own row is never asked


def test_foreground_volume_is_the_predicted_foreground_in_millilitres(disagreement_data):
    manifest, bundle = disagreement_data
    [big] = case_signals(bundle, {"sharp3": manifest.cases["sharp3"].images}, experts=["b"], needs={"foreground"})
    expected = (sphere(7, seed=3) > 0.5).sum() * 8 / 1000  # 2 mm voxels: 8 uL each
    assert big.foreground_ml == pytest.approx(expected, rel=0.02)
    assert big.disagreement == pytest.approx(0.0, abs=1e-6)  # one expert cannot disagree with itself


def test_candidates_are_the_doctors_unlabelled_training_cases_unless_all(disagreement_data):
    manifest, _ = disagreement_data
    assert candidate_cases(manifest, "newdoc", "unlabelled") == (["blurred", "sharp1", "sharp2", "sharp3"], ["sharp0"])
    assert candidate_cases(manifest, "newdoc", "all") == (["blurred", "sharp0", "sharp1", "sharp2", "sharp3"], [])
    assert candidate_cases(manifest, "nobody-yet", "unlabelled")[0] == manifest.case_ids("train")  # a cold start


@pytest.mark.parametrize("k", [0, 5])
def test_k_out_of_range_is_refused_in_one_line(disagreement_data, k):
    manifest, bundle = disagreement_data
    candidates, labelled = candidate_cases(manifest, "newdoc", "unlabelled")
    with pytest.raises(ConfigError) as err:
        suggest_cases(bundle, manifest, expert="newdoc", k=k, strategy="random", candidates=candidates, labelled=labelled)
    assert len(err.value.problems) == 1 and ("4 candidate" in err.value.problems[0] or ">= 1" in err.value.problems[0])


def test_a_case_that_is_not_in_the_dataset_is_refused(disagreement_data):
    manifest, bundle = disagreement_data
    with pytest.raises(DatasetError, match="no case ghost"):
        suggest_cases(bundle, manifest, expert="newdoc", k=1, strategy="random", candidates=["ghost"])


@pytest.fixture
def unet_bundle():
    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=2, num_experts=3, channels=(4, 8))
    with torch.no_grad():  # distinct expert rows, so the experts' predictions differ
        for layer in net.cin_layers().values():
            gamma, beta = layer.gamma[0], layer.beta[0]
            gamma.copy_(1 + 0.3 * torch.randn_like(gamma))
            beta.copy_(0.3 * torch.randn_like(beta))
    return ModelBundle(network=net.eval(), experts=["a", "b", "c"], plan=PLAN, arch={"name": "cin_unet", "kwargs": {"channels": [4, 8]}})


def test_the_rebuilt_network_returns_the_bottleneck_and_predicts_as_the_original(unet_bundle):
    assert bottleneck_feature(unet_bundle.network) == "encoder.1"
    net = network_with_features(unet_bundle, ["encoder.1"])
    image = torch.as_tensor(sphere(5, blur=2.0)).float()[None]  # [1, 16, 16, 16] in a 20^3 sweep
    image = torch.nn.functional.pad(image, (2, 2, 2, 2, 2, 2))
    probs, feats = predict_experts_with_features(net, image, [0, 2], feature="encoder.1", patch_size=[16, 16, 16])
    assert torch.allclose(probs, predict_experts(unet_bundle.network, image, [0, 2], patch_size=[16, 16, 16]), atol=1e-5)
    assert probs.shape == (2, 2, 20, 20, 20) and feats.shape == (8, 10, 10, 10)  # bottleneck at half resolution
    with pytest.raises(ValueError, match="does not return feature"):
        predict_experts_with_features(unet_bundle.network, image, [0], feature="encoder.1", patch_size=[16, 16, 16])


@pytest.mark.parametrize("strategy", ["diversity", "disagreement+diversity"])
def test_diversity_never_picks_two_identical_images(tmp_path, unet_bundle, strategy):
    images = {f"s{i}": sphere(3 + i, blur=float(i), seed=i) for i in range(4)}
    images["s1copy"] = images["s1"].copy()  # the same scan under two ids
    manifest = write_dataset(tmp_path / "d", images)
    candidates, _ = candidate_cases(manifest, "newdoc", "all")
    suggestion = suggest_cases(unet_bundle, manifest, expert="newdoc", k=4, strategy=strategy, candidates=candidates)
    assert not {"s1", "s1copy"} <= set(suggestion.cases), suggestion.cases
    assert suggestion.ranking[-1].parts["distance"] == 0.0
    assert suggestion.signals[0].features.shape == (16,)  # mean and std of 8 bottleneck channels
