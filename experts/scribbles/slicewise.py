"""The ``"slicewise"`` scribble style of ScribbleBench (Gotkowski et al., arXiv 2403.12834).

The dense label [X, Y, Z] is annotated slice by slice along one axis. The candidate slices are the
slices containing foreground and the pure-background slices; a fraction ``density`` of each group
is drawn at random (at least one slice). On each chosen slice, for every class present (background
included), one 8-connected component is drawn with probability proportional to its area and gets:

* an **interior** stroke: the cheapest path inside the component through ``n_control_points``
  random points (drawn with weight ~ distance to the component's edge, ordered along the
  component's principal axis); the path cost ``1 + 2 / distance-to-edge`` keeps it off the edge.
  The path is smoothed (Gaussian, ``smoothness``), clipped to the component and reduced to its
  largest 8-connected piece, then thickened to ``thickness`` px within the component: one
  8-connected stroke. A one-pixel component gets a one-pixel stroke.
* a **boundary** stroke: an arc of ``arc_fraction_range`` of the contour of the component eroded
  by ``erosion_range`` px (Euclidean; smaller if the erosion would leave nothing; no stroke if even
  1 px leaves nothing or the component fills the slice), thickened within the component. The arc
  is the window of the ordered contour (``skimage.measure.find_contours``) with the highest total
  absolute turning angle of the Gaussian-smoothed contour (a curvature proxy); windows within 10 %
  of the best are equally eligible. Contour parts on the image border are not boundaries.

Every other voxel gets ``ignore_label``. Sizes are in pixels, as ScribbleBench states them; the voxel
spacing is accepted (as by every style) and not used. The random choices (slices, control points, erosion, arc
length and tie-break) are made by :meth:`SlicewiseScribbles.make_params`; :meth:`apply` is
deterministic given them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import find_contours

from experts.scribbles.base import (
    DEFAULT_SPACING,
    EIGHT_CONNECTED,
    ScribbleStyle,
    StrokeRecord,
    check_int,
    check_label,
    check_pair,
    check_rng,
    check_spacing,
    geodesic_path,
    largest_piece,
    output_dtype,
    polyline_mask,
    thicken,
)
from experts.scribbles.registry import register_scribble_style

__all__ = ["SlicewiseScribbles"]

_TIE_TOLERANCE = 0.1  # arc windows within 10 % of the highest curvature score are eligible


@register_scribble_style("slicewise")
class SlicewiseScribbles(ScribbleStyle):
    """ScribbleBench's slice-wise interior + boundary scribbles (arXiv 2403.12834).

    Args:
        axis: axis of [X, Y, Z] to slice along (-3..2), or ``"auto"`` for the axis with the most
            slices (the last such). Default -1 (Z).
        density: fraction in (0, 1] of the foreground slices and of the background slices that are
            annotated. Default 1.0 (every slice, as ScribbleBench).
        thickness: stroke width in px, >= 1 (1 suits low-resolution volumes). Default 3.
        n_control_points: points the interior stroke passes through, >= 1. Default 4.
        erosion_range: (min, max) erosion in px of the boundary stroke's contour. Default (2, 5).
        arc_fraction_range: (min, max) fraction of that contour covered. Default (0.07, 0.15).
        smoothness: Gaussian sigma (in path pixels) smoothing the interior stroke; 0 disables.
            Default 2.0.
    """

    def __init__(self, *, axis: int | str = -1, density: float = 1.0, thickness: int = 3,
                 n_control_points: int = 4, erosion_range: tuple[int, int] = (2, 5),
                 arc_fraction_range: tuple[float, float] = (0.07, 0.15), smoothness: float = 2.0):
        if axis != "auto" and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))
                               or not -3 <= axis <= 2):
            raise ValueError(f"axis must be an int in [-3, 2] or 'auto', got {axis!r}")
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], got {density}")
        check_int("thickness", thickness, 1)
        check_int("n_control_points", n_control_points, 1)
        lo, hi = check_pair("erosion_range", erosion_range)
        check_int("erosion_range[0]", lo, 1)
        check_int("erosion_range[1]", hi, lo)
        flo, fhi = check_pair("arc_fraction_range", arc_fraction_range)
        if not 0 < flo <= fhi <= 1:
            raise ValueError(f"arc_fraction_range must satisfy 0 < min <= max <= 1, got {arc_fraction_range}")
        if not smoothness >= 0:
            raise ValueError(f"smoothness must be >= 0, got {smoothness}")
        self.axis = axis if axis == "auto" else int(axis)
        self.density = float(density)
        self.thickness = int(thickness)
        self.n_control_points = int(n_control_points)
        self.erosion_range = (int(lo), int(hi))
        self.arc_fraction_range = (float(flo), float(fhi))
        self.smoothness = float(smoothness)

    def get_params(self) -> dict:
        return {"axis": self.axis, "density": self.density, "thickness": self.thickness,
                "n_control_points": self.n_control_points, "erosion_range": list(self.erosion_range),
                "arc_fraction_range": list(self.arc_fraction_range), "smoothness": self.smoothness}

    def make_params(self, label, *, ignore_label: int, rng: np.random.Generator,
                    spacing=DEFAULT_SPACING) -> dict:
        """Draw slices, components, control points and boundary-arc choices.

        Args:
            label: int array [X, Y, Z], classes 0..K-1 (0 is background).
            ignore_label: value of unannotated voxels; must not occur in ``label``.
            rng: the only source of randomness.
            spacing: voxel size in mm (X, Y, Z); checked, not used (this style works in pixels).

        Returns:
            JSON-serialisable dict: ``axis`` (resolved), ``shape``, ``thickness``, ``smoothness`` and
            ``slices``, a list of ``{"index", "strokes"}`` whose strokes are ``{"class", "points"
            [[row, col], ...], "erosion", "arc_fraction", "arc_pick"}``, one per class on the slice.
        """
        lab = check_label(label, ignore_label)
        check_rng(rng)
        check_spacing(spacing)
        axis = self._resolve_axis(lab.shape)
        vol = np.moveaxis(lab, axis, 0)
        has_fg = (vol > 0).reshape(vol.shape[0], -1).any(axis=1)
        fg, bg = np.flatnonzero(has_fg), np.flatnonzero(~has_fg)
        chosen = np.sort(np.concatenate([self._subsample(fg, len(fg) > 0, rng),
                                         self._subsample(bg, len(fg) == 0, rng)]))
        slices = []
        for index in chosen.tolist():
            plane = vol[index]
            strokes = []
            for k in np.unique(plane).tolist():
                comps, n = ndi.label(plane == k, structure=EIGHT_CONNECTED)
                areas = np.bincount(comps.ravel())[1:]
                cid = 1 + int(rng.choice(n, p=areas / areas.sum()))
                region, origin = _crop(comps == cid)
                points = _control_points(region, self.n_control_points, rng) + np.asarray(origin)
                strokes.append({
                    "class": k,
                    "points": points.tolist(),
                    "erosion": int(rng.integers(self.erosion_range[0], self.erosion_range[1] + 1)),
                    "arc_fraction": float(rng.uniform(*self.arc_fraction_range)),
                    "arc_pick": float(rng.random()),
                })
            slices.append({"index": index, "strokes": strokes})
        return {"style": self.name, "axis": axis, "shape": list(lab.shape), "thickness": self.thickness,
                "smoothness": self.smoothness, "slices": slices}

    def apply(self, label, params: dict, *, ignore_label: int, spacing=DEFAULT_SPACING,
              return_strokes: bool = False):
        """Draw the strokes described by ``params`` (from :meth:`make_params`) on ``label``.

        Args:
            label: the int array [X, Y, Z] given to :meth:`make_params`.
            params: the parameters; only they (not this instance's configuration) are used.
            ignore_label: value of unannotated voxels.
            spacing: voxel size in mm (X, Y, Z); checked, not used.
            return_strokes: also return one :class:`StrokeRecord` per drawn stroke.

        Returns:
            partial label [X, Y, Z] (uint8, uint16 if values exceed 255): true class on strokes,
            ``ignore_label`` elsewhere; with ``return_strokes``, ``(partial, records)``.
        """
        lab = check_label(label, ignore_label)
        check_spacing(spacing)
        if params.get("style", self.name) != self.name:
            raise ValueError(f"params were made by style {params['style']!r}, not {self.name!r}")
        if list(params.get("shape", [])) != list(lab.shape):
            raise ValueError(f"params were made for a label of shape {params.get('shape')}, got {lab.shape}")
        axis, thickness, smoothness = int(params["axis"]), int(params["thickness"]), float(params["smoothness"])
        out = np.full(lab.shape, ignore_label, dtype=output_dtype(lab, ignore_label))
        vol, out_vol = np.moveaxis(lab, axis, 0), np.moveaxis(out, axis, 0)
        records: list[StrokeRecord] = []
        for sl in params["slices"]:
            index, plane = int(sl["index"]), vol[int(sl["index"])]
            for st in sl["strokes"]:
                k, points = int(st["class"]), [tuple(p) for p in st["points"]]
                comps, _ = ndi.label(plane == k, structure=EIGHT_CONNECTED)
                cid = comps[points[0]]
                if cid == 0 or any(comps[p] != cid for p in points):
                    raise ValueError(f"params do not fit this label: slice {index}, class {k}")
                region, (r0, c0) = _crop(comps == cid)
                local = [(r - r0, c - c0) for r, c in points]
                dist = _edge_distance(region)
                interior = _interior_stroke(region, dist, local, thickness, smoothness)
                boundary, used = _boundary_stroke(region, dist, int(st["erosion"]), float(st["arc_fraction"]),
                                                  float(st["arc_pick"]), thickness)
                for kind, mask, erosion in (("interior", interior, None), ("boundary", boundary, used)):
                    if mask is None:
                        continue
                    full = np.zeros(plane.shape, dtype=bool)
                    full[r0:r0 + mask.shape[0], c0:c0 + mask.shape[1]] = mask
                    out_vol[index][full] = k
                    if return_strokes:
                        records.append(StrokeRecord(axis, index, k, kind, full, erosion))
        return (out, records) if return_strokes else out

    def _resolve_axis(self, shape: tuple[int, ...]) -> int:
        if self.axis == "auto":
            return int(len(shape) - 1 - np.argmax(shape[::-1]))
        return self.axis % 3

    def _subsample(self, group: np.ndarray, at_least_one: bool, rng: np.random.Generator) -> np.ndarray:
        count = min(len(group), max(int(at_least_one), math.floor(self.density * len(group) + 0.5)))
        return rng.choice(group, size=count, replace=False) if count else group[:0]


def _crop(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Bounding box of a 2D mask plus a 1 px margin (clipped to the image), and its origin."""
    (rs, cs), = ndi.find_objects(mask.astype(np.int8))
    r0, c0 = max(rs.start - 1, 0), max(cs.start - 1, 0)
    return mask[r0:rs.stop + 1, c0:cs.stop + 1], (r0, c0)


def _edge_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance to the nearest pixel outside ``region`` (image border excluded); inf if none."""
    if region.all():
        return np.full(region.shape, np.inf)
    return ndi.distance_transform_edt(region)


def _control_points(region: np.ndarray, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """``n_points`` distinct pixels of ``region`` (weight ~ edge distance), along its principal axis."""
    rr, cc = np.nonzero(region)
    weight = np.minimum(_edge_distance(region)[rr, cc], 1e6)
    pick = rng.choice(rr.size, size=min(n_points, rr.size), replace=False, p=weight / weight.sum())
    points = np.stack([rr[pick], cc[pick]], axis=1)
    coords = np.stack([rr, cc], axis=1).astype(float)
    direction = np.linalg.eigh(np.cov(coords.T))[1][:, -1] if rr.size > 2 else np.array([1.0, 0.0])
    return points[np.argsort(points @ direction, kind="stable")]


def _interior_stroke(region, dist, points, thickness: int, smoothness: float) -> np.ndarray:
    """One 8-connected stroke inside ``region`` through ``points`` (crop coordinates)."""
    cost = np.full(region.shape, np.inf)
    cost[region] = 1.0 + 2.0 / dist[region]
    path = geodesic_path(cost, points)
    centre = polyline_mask(path, region.shape)
    if smoothness > 0 and len(path) > 2:
        smooth = ndi.gaussian_filter1d(path.astype(float), smoothness, axis=0, mode="nearest")
        smooth = largest_piece(polyline_mask(np.rint(smooth).astype(int), region.shape) & region)
        if smooth.sum() >= 0.5 * centre.sum():
            centre = smooth
    return thicken(centre, region, thickness)


def _boundary_stroke(region, dist, erosion: int, arc_fraction: float, arc_pick: float, thickness: int):
    """Arc of the eroded contour where curvature is highest, thickened; (mask, erosion) or (None, None)."""
    if np.isinf(dist).any():  # the component fills the slice: no contour
        return None, None
    used = next((e for e in range(erosion, 0, -1) if (dist > e).any()), None)
    if used is None:
        return None, None
    arc = _curvature_arc(dist > used, arc_fraction, arc_pick)
    return (None, None) if arc is None else (thicken(arc, region, thickness), used)


def _curvature_arc(eroded: np.ndarray, arc_fraction: float, arc_pick: float) -> np.ndarray | None:
    """Pixels of ``eroded`` along the contour window with the highest total turning angle."""
    padded = np.pad(eroded, 1)
    height, width = padded.shape
    runs, sums = [], []  # per run: (inside pixels [N, 2], window length, closed), window scores
    for contour in find_contours(padded.astype(float), 0.5):
        vertices = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        lo, hi = np.floor(vertices).astype(int), np.ceil(vertices).astype(int)
        lo_in = padded[lo[:, 0], lo[:, 1]][:, None]
        inside, outside = np.where(lo_in, lo, hi) - 1, np.where(lo_in, hi, lo)
        on_border = ((outside[:, 0] == 0) | (outside[:, 0] == height - 1)
                     | (outside[:, 1] == 0) | (outside[:, 1] == width - 1))
        n_valid = int((~on_border).sum())
        if n_valid == 0:
            continue
        length = max(1, round(arc_fraction * n_valid))
        for run, closed in _valid_runs(on_border):
            turn = _turning(vertices[run], closed)
            size = min(length, len(run))
            ext = np.concatenate([turn, turn[:size - 1]]) if closed else turn
            runs.append((inside[run], size))
            sums.append(np.convolve(ext, np.ones(size), mode="valid"))
    if not runs:
        return None
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(sums)])
    starts = np.concatenate([np.arange(len(s)) for s in sums])
    scores = np.concatenate(sums)
    eligible = np.flatnonzero(scores >= scores.max() * (1 - _TIE_TOLERANCE) - 1e-9)
    chosen = int(eligible[min(int(arc_pick * len(eligible)), len(eligible) - 1)])
    pixels, size = runs[owner[chosen]]
    pixels = pixels[(starts[chosen] + np.arange(size)) % len(pixels)]
    arc = np.zeros(eroded.shape, dtype=bool)
    arc[pixels[:, 0], pixels[:, 1]] = True
    return arc


def _valid_runs(on_border: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Maximal cyclic runs of contour vertices off the image border, as (indices, closed)."""
    n = len(on_border)
    if not on_border.any():
        return [(np.arange(n), True)]
    shift = int(np.flatnonzero(on_border)[0])
    order = (np.arange(n) + shift) % n  # starts on a border vertex
    pieces = np.split(order, np.flatnonzero(on_border[order]))
    return [(p[1:], False) for p in pieces if len(p) > 1]


def _turning(points: np.ndarray, closed: bool, sigma: float = 2.0, step: int = 2) -> np.ndarray:
    """Absolute turning angle (rad) at each vertex of a Gaussian-smoothed polyline [N, 2]."""
    smooth = ndi.gaussian_filter1d(points, sigma, axis=0, mode="wrap" if closed else "nearest")
    idx = np.arange(len(points))
    if closed:
        prev, nxt = smooth[(idx - step) % len(idx)], smooth[(idx + step) % len(idx)]
    else:
        prev, nxt = smooth[np.maximum(idx - step, 0)], smooth[np.minimum(idx + step, len(idx) - 1)]
    a, b = smooth - prev, nxt - smooth
    return np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(axis=1)))
