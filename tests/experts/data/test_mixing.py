"""Scribble mixing and occlusion: integer labels, same-expert partners, replayable from the seed."""

import pytest
import torch

from experts.data.mixing import MixedPatchDataset, MixParams, SupervisionAugment
from experts.training.sampling import SampleItem

IGNORE = 3


class Patches:
    """A stand-in PatchDataset: item ``i`` is an image of value ``i`` and a label of value ``i % 3`` on one slice."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        index, _ = key
        label = torch.full((1, 8, 8, 8), IGNORE)
        label[:, :, :, index] = index % 3
        return {"image": torch.full((1, 8, 8, 8), float(index)), "label": label, "expert": torch.tensor(self.items[index].row), "spacing": torch.ones(3)}


ITEMS = [SampleItem("a", "e1", "partial", 0), SampleItem("b", "e1", "partial", 0), SampleItem("c", "e2", "partial", 1), SampleItem("d", "e1", "dense", 0)]


def test_partners_are_the_same_experts_other_scribbled_items():
    ds = MixedPatchDataset.from_items(Patches(ITEMS), mix=1.0, occlusion=0.0)
    assert ds.augment.groups == {0: [1], 1: [0], 2: []}


def test_a_mixed_patch_takes_the_partners_box_and_keeps_an_integer_label():
    ds = MixedPatchDataset.from_items(Patches(ITEMS), mix=1.0, occlusion=0.0)
    params = ds.augment.make_params(0, 123, (8, 8, 8))
    assert params.partner[0] == 1 and params.occlusion_box is None
    out = ds[(0, 123)]
    box = (slice(None), *(slice(a, b) for a, b in params.mix_box))
    inside = torch.zeros(1, 8, 8, 8, dtype=torch.bool)
    inside[box] = True
    assert (out["image"][inside] == 1).all() and (out["image"][~inside] == 0).all()
    assert out["label"].dtype == torch.long and set(out["label"].unique().tolist()) <= {0, 1, IGNORE}
    assert torch.equal(ds[(0, 123)]["label"], out["label"])  # the same seed, the same sample


def test_items_without_a_partner_and_dense_items_are_never_mixed():
    ds = MixedPatchDataset.from_items(Patches(ITEMS), mix=1.0, occlusion=0.0)
    for index in (2, 3):
        assert ds.augment.make_params(index, 7, (8, 8, 8)).partner is None
        assert torch.equal(ds[(index, 7)]["image"], Patches(ITEMS)[(index, 7)]["image"])


def test_occlusion_blanks_the_image_and_keeps_the_labels():
    sample = Patches(ITEMS)[(2, 0)]
    params = MixParams(occlusion_box=((0, 4), (0, 8), (0, 8)))
    out = SupervisionAugment.apply(sample, params)
    assert (out["image"][:, :4] == 0).all() and (out["image"][:, 4:] == 2).all()
    assert torch.equal(out["label"], sample["label"]) and (sample["image"] == 2).all()


def test_probabilities_outside_zero_one_are_refused():
    with pytest.raises(ValueError, match=r"augment.mix is a probability in \[0, 1\]"):
        SupervisionAugment({}, mix=1.5)
