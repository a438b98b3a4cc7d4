"""The interactive session: crops near the prompt, undo and redo, edges, spacing, world coordinates."""

import numpy as np
import pytest
import torch

from experts.bundle import ModelBundle
from experts.data.plan import Plan
from experts.errors import ConfigError
from experts.interactive.building import promptable_bundle
from experts.interactive.session import InteractiveSession
from experts.networks import create_network


def toy_bundle(spacing=(1.0, 1.0, 1.0), patch=(16, 16, 16)):
    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=2, num_experts=2, channels=(4, 8))
    plan = Plan(spacing=list(spacing), patch_size=list(patch), normalization=["none"], channel_names=["MR"], class_names=["background", "blob"], ignore_label=2, median_shape=[24, 24, 24])
    base = ModelBundle(network=net, experts=["a", "b"], plan=plan, arch={"name": "cin_unet", "kwargs": {"channels": [4, 8]}})
    with torch.no_grad():  # the automatic answer: nothing anywhere
        set_head(net, background=5.0)
    bundle = promptable_bundle(base)
    with torch.no_grad():  # the interactive answer: a constant (0.5: no object) until a test sets it
        for p in bundle.network.interactive.parameters():
            p.zero_()
    return bundle


def set_head(net, *, background=0.0, blob=0.0):
    """Set the head's bias, found through the protocol's parameter groups."""
    bias = [p for p in net.parameter_groups()["head"].values() if p.ndim == 1][0]
    bias.copy_(torch.tensor([background, blob]))


def blob_image(shape=(24, 24, 24)):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return (np.linalg.norm(g - np.array(shape) / 2, axis=-1) < 5).astype(np.float32)


def test_undo_restores_the_mask_bit_for_bit_and_redo_puts_the_change_back():
    session = InteractiveSession(toy_bundle(), blob_image(), "a")
    torch.manual_seed(1)
    for p in session.model.network.interactive.parameters():  # any answer will do: random weights
        p.data.normal_(0, 0.3)
    start = session.prob.copy()
    first = session.click([12, 12, 12])
    after_one = session.prob.copy()
    session.scribble([[3, 3, 3], [8, 3, 3]], positive=False)
    assert not np.array_equal(session.prob, after_one) or not np.array_equal(after_one, start)
    session.undo()
    assert np.array_equal(session.prob, after_one)
    session.undo()
    assert np.array_equal(session.prob, start) and session.state()["interactions"] == 0
    session.redo()
    assert np.array_equal(session.prob, after_one) and first["step"] == 1
    assert session.undo()["undone"] and not session.undo()["undone"]


@pytest.mark.parametrize("point", [[0, 0, 0], [23, 23, 23], [0, 23, 11]])
def test_crops_at_the_volumes_edge_stay_inside_and_have_the_patch_size(point):
    session = InteractiveSession(toy_bundle(), blob_image(), "b")
    out = session.click(point)
    lo, hi = np.array(out["crop"][0]), np.array(out["crop"][1])
    assert (lo >= 0).all() and (hi <= 23).all() and (hi - lo + 1 == 16).all()


def test_a_crop_grows_while_the_answer_touches_its_border_up_to_the_volume():
    bundle = toy_bundle()
    with torch.no_grad():
        set_head(bundle.network.interactive, blob=3.0)  # everything is the object
    session = InteractiveSession(bundle, blob_image((48, 48, 48)), "a")
    assert session.click([24, 24, 24])["crop"] == [[0, 0, 0], [47, 47, 47]]
    fixed = InteractiveSession(bundle, blob_image((48, 48, 48)), "a", max_zoom=1.0)
    assert fixed.click([24, 24, 24])["crop"] == [[16, 16, 16], [31, 31, 31]]
    assert fixed.click([24, 24, 24])["crop"] == [[12, 12, 12], [35, 35, 35]]  # the object the click touches, plus a margin


def test_a_volume_smaller_than_the_patch_is_padded_for_the_network():
    session = InteractiveSession(toy_bundle(), blob_image((10, 12, 9)), "a")
    out = session.click([5, 6, 4])
    assert out["crop"] == [[0, 0, 0], [9, 11, 8]] and session.mask().shape == (10, 12, 9)


def test_anisotropic_spacing_resamples_in_and_the_mask_comes_back_on_the_input_grid(tmp_path):
    bundle = toy_bundle(spacing=(1.0, 1.0, 1.0))
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    session = InteractiveSession(bundle, blob_image((24, 24, 10)), "a", affine=affine)
    assert session.prob.shape[2] > 20  # 10 slices of 2.5 mm on a 1 mm grid
    session.click([12, 12, 5])
    path = session.save(tmp_path / "mask.nii.gz")
    from experts.data.nifti import load_volume

    back = load_volume(path, kind="label")
    assert back.array.shape == (24, 24, 10) and np.allclose(back.affine, affine)


def test_world_coordinates_land_on_the_named_voxel_of_an_oblique_volume():
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 1.0, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 7.0]
    session = InteractiveSession(toy_bundle(), blob_image(), "a", affine=affine)
    voxel = np.array([15, 6, 9])
    world = (affine @ np.r_[voxel, 1])[:3]
    a = session._voxels([world.tolist()], "world", "click")
    b = session._voxels([voxel.tolist()], "voxel", "click")
    assert np.array_equal(a, b)
    # and the model-grid voxel is the same point in space (within half a voxel of the 1 mm grid)
    back = (session.model_affine @ np.r_[a[0], 1])[:3]
    assert np.abs(back - world).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("call, match", [
    (lambda s: s.click([30, 0, 0]), "outside the image"),
    (lambda s: s.click([1, 2]), "triples"),
    (lambda s: s.box([2, 2, 2], [2, 2, 9]), "zero size"),
    (lambda s: s.click([1, 2, 3], coordinates="pixels"), "coordinates"),
])
def test_bad_prompts_are_refused_in_one_line(call, match):
    session = InteractiveSession(toy_bundle(), blob_image(), "a")
    with pytest.raises(ConfigError, match=match):
        call(session)


def test_an_unknown_expert_or_class_is_refused():
    with pytest.raises(ConfigError, match="not in this model"):
        InteractiveSession(toy_bundle(), blob_image(), "zz")
    with pytest.raises(ConfigError, match="not a foreground class"):
        InteractiveSession(toy_bundle(), blob_image(), "a", target="liver")


def test_the_eraser_clears_the_mask_within_its_radius_in_mm_and_undo_brings_it_back():
    bundle = toy_bundle(spacing=(2.0, 2.0, 2.0))
    with torch.no_grad():
        set_head(bundle.network.automatic, blob=10.0)  # the automatic answer: the object everywhere
    session = InteractiveSession(bundle, blob_image(), "a", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    start = session.prob.copy()
    out = session.erase([[12, 12, 12], [12, 16, 12]], radius_mm=4.0)  # 4 mm = 2 voxels of 2 mm
    erased = session.prob <= 0.5
    assert erased[12, 12:17, 12].all() and erased[10, 12, 12] and not erased[9, 12, 12] and not erased[12, 19, 12]
    assert out["step"] == 1 and session.prompts[-1].kind == "scribble" and not session.prompts[-1].positive
    session.undo()
    assert np.array_equal(session.prob, start)
    with pytest.raises(ConfigError, match="radius_mm"):
        session.erase([[1, 1, 1]], radius_mm=0)


def test_a_session_can_start_from_a_given_mask_and_refuses_one_of_another_shape():
    start = np.zeros((24, 24, 24), np.float32)
    start[8:16, 8:16, 8:16] = 0.9
    session = InteractiveSession(toy_bundle(), blob_image(), "a", start=start)
    assert np.array_equal(session.prob, start) and session.prob is not start
    with pytest.raises(ConfigError, match="start: a mask of shape"):
        InteractiveSession(toy_bundle(), blob_image(), "a", start=start[:20])


def test_each_interaction_reports_the_network_calls_and_the_voxels_they_ran_on():
    bundle = toy_bundle()
    with torch.no_grad():
        set_head(bundle.network.interactive, blob=3.0)  # everything is the object: the crop grows
    out = InteractiveSession(bundle, blob_image((48, 48, 48)), "a").click([24, 24, 24])
    assert out["network_calls"] > 1 and out["network_voxels"] >= 16**3 + 48**3
    fixed = InteractiveSession(bundle, blob_image((48, 48, 48)), "a", max_zoom=1.0).click([24, 24, 24])
    assert fixed["network_calls"] == 1 and fixed["network_voxels"] == 16**3


def test_an_interaction_edits_the_object_it_touches_and_leaves_the_others_in_the_crop_as_they_were():
    start = np.zeros((24, 24, 24), np.float32)
    start[5:9, 5:9, 5:9] = 0.9     # the object clicked on
    start[12:15, 5:9, 5:9] = 0.8   # another object of the class (the other thalamus), inside the same crop
    session = InteractiveSession(toy_bundle(), blob_image(), "a", start=start)  # the network answers 0.5: no object
    out = session.click([6, 6, 6], positive=False)
    lo, hi = out["crop"]
    assert lo[0] <= 12 and hi[0] >= 14  # the other object lies inside the crop ...
    assert (session.prob[5:9, 5:9, 5:9] <= 0.5).all()  # ... the clicked one is gone,
    assert np.array_equal(session.prob[12:15, 5:9, 5:9], start[12:15, 5:9, 5:9])  # the other is untouched
    session.undo()
    assert np.array_equal(session.prob, start)
