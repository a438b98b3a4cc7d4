"""Simulated corrections land in the largest error component, at its distance-transform maximum."""

import numpy as np
import pytest

from experts.interactive.corrections import error_click, error_scribble, largest_error


def volume():
    """[20, 20, 20]: target = a 6^3 cube (missed) and a 2^3 cube (found); a 4^3 false-positive cube."""
    target = np.zeros((20, 20, 20), bool)
    target[2:8, 2:8, 2:8] = True  # missed: 216 voxels of false negative
    target[15:17, 15:17, 15:17] = True
    pred = np.zeros_like(target)
    pred[15:17, 15:17, 15:17] = True
    pred[10:14, 2:6, 12:16] = True  # 64 voxels of false positive
    return pred, target


def test_the_click_goes_positive_into_the_larger_missed_blob_at_its_centre():
    pred, target = volume()
    click = error_click(pred, target)
    assert click.kind == "click" and click.positive
    (x, y, z), = click.points
    assert all(4 <= c <= 5 for c in (x, y, z))  # the EDT maximum of the 6^3 cube: its centre voxels


def test_a_larger_false_positive_gets_a_negative_click_inside_it():
    pred, target = volume()
    pred[2:8, 2:8, 2:8] = True  # the big blob found now
    click = error_click(pred, target)
    assert not click.positive
    (x, y, z), = click.points
    assert 10 <= x < 14 and 2 <= y < 6 and 12 <= z < 16


def test_unannotated_errors_do_not_count():
    pred, target = volume()
    annotated = np.ones_like(target)
    annotated[:9, :9, :9] = False  # the missed cube is not annotated: the false positive is the error
    assert not error_click(pred, target, annotated).positive


def test_no_error_gives_no_prompt():
    target = np.zeros((12, 12, 12), bool)
    assert error_click(target, target) is None and largest_error(target, target) is None


def test_the_centre_is_measured_in_mm_on_an_anisotropic_grid():
    target = np.zeros((16, 16, 8), bool)
    target[1:12, 1:12, 0:5] = True  # 11 x 11 voxels in-plane, 5 slices of 3 mm (touching the border at z=0)
    (x, y, z), = error_click(np.zeros_like(target), target, spacing=(1.0, 1.0, 3.0)).points
    # in voxels the deepest point would be at z=0..2 (the border counts as an edge); in mm the
    # in-plane distance (6 mm) limits first, so the click sits in the in-plane centre
    assert (x, y) == (6, 6) and 1 <= z <= 3


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_scribble_correction_lies_inside_the_error_component(axis):
    pred, target = volume()
    scribble = error_scribble(pred, target, axis=axis)
    assert scribble.positive
    pts = scribble.points
    assert len(pts) >= 1 and target[tuple(pts.T)].all() and not pred[tuple(pts.T)].any()
    assert len(np.unique(pts[:, axis])) == 1  # one slice
