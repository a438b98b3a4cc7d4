"""Pseudo-subjects warped from the MNI152 2009 template that nilearn ships (no download).

A pseudo-subject is the template (T1 and tissue probability maps) moved by a random affine
(rotation, anisotropic scale: head size, translation), a smooth low-frequency displacement field
and a radial enlargement of the centre of the brain (ventricles and deep grey nuclei, as with age
or atrophy), sampled directly on the output grid (RAS+ mm, isotropic, cropped to the brain plus a
margin). The T1 then gets a random gamma, a smooth multiplicative bias field, a scanner gain and
Rician noise. Every subject is the one template moved smoothly, so the anatomy varies little: with
the demo's 1,500 pretraining steps a network trained on 3 subjects comes within 0.01 Dice of one
trained on all of them. The T1 and the tissue maps are sampled at the same warped point, so what a
neighbourhood looks like and what its label is relate the same way in every subject; a finer warp,
white-matter lesions or a 2 mm grid do not change that (BENCHMARKS.md, "Pretraining budget and the
demo's anatomy").

Randomness is kept apart from its application: :func:`make_subject_params` draws every random
number (JSON-serialisable), :func:`make_subject` is a deterministic function of those parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

__all__ = [
    "Template",
    "Subject",
    "load_template",
    "output_grid",
    "make_subject_params",
    "make_subject",
    "posterior_fossa",
    "deep_grey_nuclei",
    "nucleus_depth",
    "NUCLEUS_CONTRAST",
]

#: Margin (mm) around the template brain's bounding box kept in the output grid.
GRID_MARGIN_MM = 18.0
#: Control points per axis of the smooth displacement field.
WARP_CONTROL_POINTS = 5
#: Centre (MNI mm) and Gaussian radius (mm) of the radial enlargement (around the lateral ventricles).
ENLARGE_CENTRE_MM = (0.0, -8.0, 16.0)
ENLARGE_RADIUS_MM = 22.0


@dataclass(frozen=True)
class Template:
    """The MNI152 template maps, cropped around the brain and blurred for one output spacing.

    Attributes:
        t1: ``[I, J, K]`` float32 T1 intensities scaled to [0, 1].
        gm, wm, brain: ``[I, J, K]`` float32 grey matter, white matter and brain-mask probabilities.
        affine: ``[4, 4]`` voxel-to-MNI-mm matrix of the cropped arrays.
        bbox_mm: ``[2, 3]`` the brain's bounding box in MNI mm (min row, max row).
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    bbox_mm: np.ndarray


@dataclass(frozen=True)
class Subject:
    """One pseudo-subject on the output grid.

    Attributes:
        image: ``[X, Y, Z]`` float32 T1 with bias field and noise.
        gm, wm, csf: ``[X, Y, Z]`` float32 tissue probabilities (``csf`` = brain mask minus GM and WM).
        brain: ``[X, Y, Z]`` float32 brain-mask probability.
        mni: ``[3, X, Y, Z]`` float32 MNI coordinates (mm) each voxel was sampled from, so that a
            style can define regions in template space (e.g. the posterior fossa).
        affine: ``[4, 4]`` voxel-to-world (RAS+ mm) matrix of the output grid.
    """

    image: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    mni: np.ndarray
    affine: np.ndarray

    @property
    def background(self) -> np.ndarray:
        """``[X, Y, Z]`` probability of neither GM nor WM (CSF and outside the brain)."""
        return np.clip(1.0 - self.gm - self.wm, 0.0, 1.0)


@lru_cache(maxsize=4)
def load_template(spacing: float) -> Template:
    """Load nilearn's 1 mm MNI152 maps, crop them to the brain and blur them for ``spacing``.

    The blur (Gaussian, FWHM = the output spacing) avoids aliasing when the 1 mm maps are sampled
    on a coarser grid. Cached per spacing.

    Args:
        spacing: output voxel size in mm.

    Returns:
        The :class:`Template`.
    """
    from nilearn import datasets  # heavy import, only when data are made

    images = [
        datasets.load_mni152_template(resolution=1),
        datasets.load_mni152_gm_template(resolution=1),
        datasets.load_mni152_wm_template(resolution=1),
        datasets.load_mni152_brain_mask(resolution=1),
    ]
    affine = np.asarray(images[0].affine, dtype=np.float64)
    arrays = [np.asarray(img.get_fdata(), dtype=np.float32) for img in images]
    t1, gm, wm, brain = arrays
    idx = np.argwhere(brain > 0.5)
    lo, hi = idx.min(0), idx.max(0)
    bbox_mm = np.stack([(affine @ np.r_[lo, 1])[:3], (affine @ np.r_[hi, 1])[:3]])
    pad = 8
    lo = np.maximum(lo - pad, 0)
    hi = np.minimum(hi + pad + 1, brain.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    shifted = affine.copy()
    shifted[:3, 3] = (affine @ np.r_[lo, 1])[:3]
    sigma = np.sqrt(max(spacing**2 - 1.0, 0.0)) / 2.355
    out = []
    for a in (t1, gm, wm, brain):
        a = np.ascontiguousarray(a[crop])
        if sigma > 0.05:
            a = ndimage.gaussian_filter(a, sigma, mode="constant", truncate=3.0)
        out.append(a)
    t1 = out[0] / max(float(out[0].max()), 1e-6)
    gm, wm = out[1], out[2]
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    return Template(t1=t1, gm=gm, wm=wm, brain=out[3], affine=shifted, bbox_mm=bbox_mm)


def output_grid(spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """The output grid: the template brain's bounding box plus a margin, at ``spacing`` mm.

    Args:
        spacing: isotropic voxel size in mm.

    Returns:
        ``(shape, affine)``: the grid's ``(X, Y, Z)`` shape and its ``[4, 4]`` RAS+ affine
        (axes along R, A, S; world coordinates are MNI-like mm).
    """
    if not spacing > 0:
        raise ValueError(f"spacing must be a positive number of mm, got {spacing!r}")
    bbox = load_template(spacing).bbox_mm
    extent = bbox[1] - bbox[0] + 2 * GRID_MARGIN_MM
    shape = tuple(int(np.ceil(e / spacing)) + 1 for e in extent)
    centre = bbox.mean(0)
    origin = centre - spacing * (np.array(shape) - 1) / 2.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin
    return shape, affine


def make_subject_params(rng: np.random.Generator) -> dict:
    """Draw one pseudo-subject's random geometry and intensity parameters.

    Args:
        rng: the random generator (the only source of randomness).

    Returns:
        A JSON-serialisable dict: ``rotation_deg`` [3], ``scale`` [3], ``translation_mm`` [3],
        ``warp_mm`` [3][P][P][P] control-point displacements, ``enlarge`` (the radial
        enlargement's strength: 0 none, 0.4 magnifies the centre 1.67x), ``gamma``, ``bias`` [9]
        log-bias coefficients of a quadratic polynomial, ``gain``, ``noise`` (Rician sigma
        relative to white matter) and ``noise_seed``.
    """
    p = WARP_CONTROL_POINTS
    warp = np.clip(rng.normal(0.0, 5.0, size=(3, p, p, p)), -10.0, 10.0)
    return {
        "rotation_deg": [round(float(v), 4) for v in rng.uniform(-12.0, 12.0, 3)],
        "scale": [round(float(v), 4) for v in rng.uniform(0.88, 1.12, 3)],
        "translation_mm": [round(float(v), 3) for v in rng.uniform(-3.0, 3.0, 3)],
        "warp_mm": np.round(warp, 3).tolist(),
        "gamma": round(float(rng.uniform(0.7, 1.4)), 4),
        "bias": [round(float(v), 4) for v in rng.normal(0.0, 0.12, 9)],
        "gain": round(float(rng.uniform(400.0, 1200.0)), 2),
        "noise": round(float(rng.uniform(0.02, 0.07)), 4),
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
        "enlarge": round(float(rng.uniform(0.0, 0.4)), 4),
    }


def _rotation(deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(np.asarray(deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_subject(params: dict, *, spacing: float = 3.0, nuclei_contrast: bool = False) -> Subject:
    """Build a pseudo-subject from :func:`make_subject_params`'s output (deterministic).

    Each output voxel's world point ``x`` is mapped back into the template:
    ``y = A^-1 (x - c - t) + c + u(x)`` with ``A`` = rotation times scale about the brain centre
    ``c``, ``t`` the translation and ``u`` the smooth displacement; then ``y`` moves toward the
    enlargement centre ``e`` by ``y <- e + (y - e)(1 - s exp(-|y - e|^2 / 2 r^2))`` (``s`` =
    ``enlarge``, one-to-one for ``s < 1``): the ventricles and deep nuclei grow and push the tissue
    around them outward. All maps are sampled at ``y`` (trilinear), so the image and the tissue maps
    move together.

    With ``nuclei_contrast`` the T1 is darkened inside the deep grey nuclei of
    :data:`DEEP_GREY_ELLIPSOIDS` (by :data:`NUCLEUS_CONTRAST`, logistic edge of 1 mm, before bias
    and noise), so that geometric nuclei have visible boundaries, as real ones have on a T1.

    Args:
        params: the subject parameters.
        spacing: isotropic output voxel size in mm.
        nuclei_contrast: draw the deep grey nuclei into the T1 (the compact-structure demo).

    Returns:
        The :class:`Subject` on the grid of :func:`output_grid`.
    """
    tpl = load_template(spacing)
    shape, affine = output_grid(spacing)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ ijk + affine[:3, 3:4].astype(np.float32)
    centre = tpl.bbox_mm.mean(0)[:, None]
    a = _rotation(params["rotation_deg"]) @ np.diag(params["scale"])
    moved = np.linalg.inv(a) @ (world - centre - np.asarray(params["translation_mm"])[:, None]) + centre
    # smooth displacement: cubic interpolation of a coarse control grid spanning the output box
    warp = np.asarray(params["warp_mm"], dtype=np.float64)
    p = warp.shape[1]
    frac = ijk / (np.array(shape, dtype=np.float32)[:, None] - 1) * (p - 1)
    for d in range(3):
        moved[d] += ndimage.map_coordinates(warp[d], frac, order=3, mode="nearest")
    enlarge = float(params.get("enlarge", 0.0))
    if enlarge:
        offset = moved - np.asarray(ENLARGE_CENTRE_MM)[:, None]
        shrink = 1.0 - enlarge * np.exp(-(offset**2).sum(0) / (2.0 * ENLARGE_RADIUS_MM**2))
        moved = np.asarray(ENLARGE_CENTRE_MM)[:, None] + offset * shrink
    mni = moved.astype(np.float32)
    vox = np.linalg.inv(tpl.affine)[:3, :3] @ moved + np.linalg.inv(tpl.affine)[:3, 3:4]
    sample = {
        name: ndimage.map_coordinates(getattr(tpl, name), vox, order=1, mode="constant", cval=0.0).reshape(shape).astype(np.float32)
        for name in ("t1", "gm", "wm", "brain")
    }
    gm, wm, brain = (np.clip(sample[k], 0.0, 1.0) for k in ("gm", "wm", "brain"))
    csf = np.clip(brain - gm - wm, 0.0, 1.0)

    # intensity: gamma, quadratic log-bias field, gain, Rician noise
    t1 = np.clip(sample["t1"], 0.0, 1.0) ** np.float32(params["gamma"])
    if nuclei_contrast:
        mni3 = mni.reshape(3, *shape)
        for name, contrast in NUCLEUS_CONTRAST.items():
            t1 = t1 * (1.0 - np.float32(contrast) * _sigmoid(nucleus_depth(mni3, name) / 1.0))
    u = (2.0 * ijk / (np.array(shape, dtype=np.float32)[:, None] - 1) - 1.0).astype(np.float32)
    basis = [u[0], u[1], u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2, u[0] * u[1], u[0] * u[2], u[1] * u[2]]
    log_bias = sum(np.float32(c) * b for c, b in zip(params["bias"], basis))
    t1 = t1 * np.exp(log_bias).reshape(shape)
    white = float(np.median(t1[wm > 0.9])) if (wm > 0.9).any() else 1.0
    sigma = params["noise"] * white
    noise = np.random.default_rng(params["noise_seed"]).normal(0.0, sigma, size=(2, *shape)).astype(np.float32)
    t1 = np.sqrt((t1 + noise[0]) ** 2 + noise[1] ** 2)
    image = (t1 * np.float32(params["gain"] / white)).astype(np.float32)
    return Subject(image=image, gm=gm, wm=wm, csf=csf, brain=brain, mni=mni.reshape(3, *shape), affine=affine)


def posterior_fossa(mni: np.ndarray, *, shift_mm: float = 0.0) -> np.ndarray:
    """Soft mask of the posterior fossa (cerebellum and brainstem) defined by MNI coordinates.

    No atlas ships offline, so the region is geometric, drawn on the MNI152 template: below a
    tentorium-like surface ``z < -8 - 0.008 x^2 - 0.25 relu(-55 - y)`` (a tent highest at the
    midline, sloping down laterally and posteriorly) and behind ``y < -12`` near the midline
    (brainstem, |x| < 16 mm) or ``y < -40`` laterally (cerebellar hemispheres, behind the temporal
    lobes). Edges are logistic with a 2 mm scale.

    Args:
        mni: ``[3, ...]`` MNI coordinates in mm (e.g. :attr:`Subject.mni`).
        shift_mm: moves the tentorium surface up (positive) or down.

    Returns:
        ``[...]`` float32 weights in [0, 1]; > 0.5 inside the posterior fossa.
    """
    x, y, z = (np.asarray(c, dtype=np.float32) for c in mni)
    tent = -8.0 + shift_mm - 0.008 * x**2 - 0.25 * 3.0 * np.logaddexp(0.0, (-55.0 - y) / 3.0)
    front = -12.0 - 28.0 * _sigmoid((np.abs(x) - 16.0) / 3.0)
    return (_sigmoid((tent - z) / 2.0) * _sigmoid((front - y) / 2.0)).astype(np.float32)


#: The deep grey nuclei as ellipsoids on the MNI152 template, one per hemisphere: ``(centre mm
#: with x > 0, semi-axes mm)``, mirrored in x.
DEEP_GREY_ELLIPSOIDS = {
    "thalamus": ((11.0, -18.0, 7.0), (7.0, 13.0, 8.0)),
    "caudate": ((13.0, 10.0, 10.0), (5.0, 10.0, 8.0)),
    "putamen": ((25.0, 2.0, 1.0), (5.0, 13.0, 8.0)),
    "pallidum": ((19.0, -3.0, -1.0), (4.0, 8.0, 5.0)),
}


def deep_grey_nuclei(mni: np.ndarray) -> np.ndarray:
    """Mask of the deep grey nuclei (thalamus, caudate, putamen, pallidum) by MNI coordinates.

    Geometric, like :func:`posterior_fossa`: the union of the ellipsoids of
    :data:`DEEP_GREY_ELLIPSOIDS` in both hemispheres, drawn on the MNI152 template.

    Args:
        mni: ``[3, ...]`` MNI coordinates in mm.

    Returns:
        ``[...]`` bool, True inside a nucleus.
    """
    x, y, z = (np.asarray(c, dtype=np.float32) for c in mni)
    inside = np.zeros(x.shape, dtype=bool)
    for (cx, cy, cz), (rx, ry, rz) in DEEP_GREY_ELLIPSOIDS.values():
        for side in (1.0, -1.0):
            inside |= ((x - side * cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 < 1.0
    return inside


#: How much each nucleus darkens the T1 in the compact-structure demo (fraction of the intensity):
#: the pallidum, more myelinated, is brighter than the putamen beside it, as on a real T1.
NUCLEUS_CONTRAST = {"thalamus": 0.12, "caudate": 0.16, "putamen": 0.16, "pallidum": 0.06}


def nucleus_depth(mni: np.ndarray, name: str) -> np.ndarray:
    """Depth (mm) of each point inside a nucleus of :data:`DEEP_GREY_ELLIPSOIDS`, either hemisphere.

    For an ellipsoid with centre ``c`` and normalised radius ``g = |(p - c) / a|``, the distance
    from ``p`` to the surface along the ray from ``c`` is ``(1 - g) |p - c| / g``: positive inside,
    negative outside, exact along the ray and close to the Euclidean distance for the nuclei's
    moderate eccentricity. The larger of the two hemispheres' values.

    Args:
        mni: ``[3, ...]`` MNI coordinates in mm.
        name: a key of :data:`DEEP_GREY_ELLIPSOIDS`.

    Returns:
        ``[...]`` float32 signed depth in mm.
    """
    (cx, cy, cz), axes = DEEP_GREY_ELLIPSOIDS[name]
    x, y, z = (np.asarray(c, dtype=np.float32) for c in mni)
    best = None
    for side in (1.0, -1.0):
        d = np.stack([x - side * cx, y - cy, z - cz])
        g = np.sqrt(sum((d[i] / axes[i]) ** 2 for i in range(3)))
        ray = np.sqrt((d**2).sum(0)) / np.maximum(g, 1e-6)
        ray = np.where(g > 1e-6, ray, min(axes))
        depth = ((1.0 - g) * ray).astype(np.float32)
        best = depth if best is None else np.maximum(best, depth)
    return best


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))
