"""HD95 / ASSD / NSD: hand-computed shifted cubes and plates with anisotropic spacing, empties, MONAI agreement."""

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric
from monai.networks.utils import one_hot

from experts.metrics import surface_metrics
from experts.metrics.results import ABSENT, EMPTY_PREDICTION, EMPTY_REFERENCE

ANISO = (1.0, 1.0, 2.5)


def cube_pair(axis):
    """A 4x4x4 cube in a [8, 8, 9] volume and the same cube shifted by one voxel along ``axis``."""
    a = np.zeros((8, 8, 9), np.uint8)
    a[2:6, 2:6, 2:6] = 1
    return a, np.roll(a, 1, axis=axis)


def plate_pair():
    """A 3x3x1 plate at z = 2 in a [5, 5, 6] volume and the same plate at z = 3: every voxel is surface."""
    a = np.zeros((5, 5, 6), np.uint8)
    a[1:4, 1:4, 2] = 1
    return a, np.roll(a, 1, axis=2)


# Each cube has 56 surface voxels (64 minus the 2x2x2 core). Shifted by one voxel of size s along an
# axis, per direction 36 voxels are at 0, 16 (ring and inner face on the trailing side) at s, and the
# 4 inner voxels of the leading face at min(s, in-plane step 1.0). Pooled: 112 distances.
# (name, volumes, spacing, hd95, assd, nsd at 1.0 mm)
CASES = [
    ("cube_shift_z_aniso", cube_pair(2), ANISO, 2.5, (16 * 2.5 + 4 * 1.0) * 2 / 112, (72 + 8) / 112),
    ("cube_shift_x_aniso", cube_pair(0), ANISO, 1.0, 40 / 112, 1.0),
    ("cube_shift_z_iso", cube_pair(2), (1.0, 1.0, 1.0), 1.0, 40 / 112, 1.0),
    ("plate_shift_z_aniso", plate_pair(), ANISO, 2.5, 2.5, 0.0),
    ("plate_shift_z_iso", plate_pair(), (1.0, 1.0, 1.0), 1.0, 1.0, 1.0),
]


@pytest.mark.parametrize("name,volumes,spacing,hd95,assd,nsd", CASES, ids=[c[0] for c in CASES])
def test_shifted_shapes_match_hand_values_and_honour_spacing(name, volumes, spacing, hd95, assd, nsd):
    ref, pred = volumes
    result = surface_metrics(pred, ref, num_classes=2, spacing=spacing)
    assert result.hd95[1].value == pytest.approx(hd95, abs=1e-5)
    assert result.assd[1].value == pytest.approx(assd, abs=1e-5)
    assert result.nsd[1].value == pytest.approx(nsd, abs=1e-5)


# cube shifted by 2.5 mm along z: distances are 0 (72), 1.0 (8) and 2.5 (32) mm
@pytest.mark.parametrize("tolerance,expected", [(0.5, 72 / 112), (1.0, 80 / 112), (2.4, 80 / 112), (2.5, 1.0), (3.0, 1.0)])
def test_nsd_counts_surface_within_tolerance_in_mm(tolerance, expected):
    ref, pred = cube_pair(2)
    result = surface_metrics(pred, ref, num_classes=2, spacing=ANISO, tolerance_mm=tolerance)
    assert result.nsd[1].value == pytest.approx(expected, abs=1e-5)
    assert result.tolerance_mm == tolerance


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_agrees_with_monai_metric_classes_on_multiclass_blobs():
    rng = np.random.default_rng(0)
    ref = np.zeros((10, 12, 8), np.int64)  # [X, Y, Z], K = 3
    ref[2:7, 3:9, 2:6] = 1
    ref[5:9, 1:5, 1:4] = 2
    pred = ref.copy()
    noise = rng.random(ref.shape) < 0.08
    pred[noise] = rng.integers(0, 3, int(noise.sum()))
    spacing, tol = (0.8, 1.0, 2.0), 1.5
    ours = surface_metrics(pred, ref, num_classes=3, spacing=spacing, tolerance_mm=tol)
    yp, yr = one_hot(torch.as_tensor(pred)[None, None], 3), one_hot(torch.as_tensor(ref)[None, None], 3)
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(yp, yr, spacing=spacing)[0]
    asd = SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")(yp, yr, spacing=spacing)[0]
    nsd = SurfaceDiceMetric(class_thresholds=[tol, tol], include_background=False, reduction="none")(yp, yr, spacing=spacing)[0]
    for i, c in enumerate((1, 2)):
        assert ours.hd95[c].value == pytest.approx(float(hd[i]), abs=1e-5)
        assert ours.assd[c].value == pytest.approx(float(asd[i]), abs=1e-5)
        assert ours.nsd[c].value == pytest.approx(float(nsd[i]), abs=1e-5)


def _cube():
    a = np.zeros((6, 6, 6), np.uint8)
    a[1:4, 1:4, 1:4] = 1
    return a


# (name, prediction, reference, hd95/assd reason, nsd value or reason); shape [6, 6, 6]
EMPTY_CASES = [
    ("prediction_empty", np.zeros((6, 6, 6), np.uint8), _cube(), EMPTY_PREDICTION, 0.0),
    ("reference_empty", _cube(), np.zeros((6, 6, 6), np.uint8), EMPTY_REFERENCE, 0.0),
    ("both_empty", np.zeros((6, 6, 6), np.uint8), np.zeros((6, 6, 6), np.uint8), ABSENT, ABSENT),
]


@pytest.mark.parametrize("name,pred,ref,reason,nsd", EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
def test_empty_classes_are_undefined_with_reason(name, pred, ref, reason, nsd):
    result = surface_metrics(pred, ref, num_classes=2, spacing=ANISO)
    for mv in (result.hd95[1], result.assd[1]):
        assert mv.value is None and mv.reason == reason
    if isinstance(nsd, str):
        assert result.nsd[1].value is None and result.nsd[1].reason == nsd
    else:
        assert result.nsd[1].value == nsd


def test_partial_reference_is_refused():
    ref = _cube()
    ref[0] = 2  # ignore label (K = 2)
    with pytest.raises(ValueError, match="need a dense reference.*36 voxels are ignore_label=2.*overlap_metrics"):
        surface_metrics(_cube(), ref, num_classes=2, spacing=ANISO, ignore_label=2)


@pytest.mark.parametrize(
    "spacing,match",
    [((1.0, 0), r"spacing must have 3 positive values in mm, got \(1.0, 0\)"), ((1.0, 1.0), "3 positive values"), ("abc", "3 positive values"), ((1, 1, float("nan")), "3 positive values")],
)
def test_bad_spacing_is_refused(spacing, match):
    with pytest.raises(ValueError, match=match):
        surface_metrics(_cube(), _cube(), num_classes=2, spacing=spacing)


@pytest.mark.parametrize("tolerance", [-1.0, float("inf"), "x"])
def test_bad_tolerance_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance_mm must be a finite number >= 0"):
        surface_metrics(_cube(), _cube(), num_classes=2, spacing=ANISO, tolerance_mm=tolerance)


def test_integer_spacing_is_accepted():
    ref, pred = plate_pair()
    result = surface_metrics(pred, ref, num_classes=2, spacing=(1, 1, 2))
    assert result.spacing == (1.0, 1.0, 2.0) and result.hd95[1].value == pytest.approx(2.0)
