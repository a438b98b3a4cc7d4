"""Base class, stroke records and shared 2D stroke helpers of the scribble styles.

A scribble style turns a dense label ``[X, Y, Z]`` into a partial one in two steps, as TorchIO's
``make_params`` / ``apply_transform``: :meth:`ScribbleStyle.make_params` draws every random choice
into a plain, JSON-serialisable dict, and :meth:`ScribbleStyle.apply` draws the strokes from those
parameters deterministically. Every style is given the voxel spacing (mm per axis, default 1 mm)
so that its distances can be stated in mm. The helpers below (input checks, geodesic paths,
thickening, largest piece, footprints in mm) are shared by all styles; connectivity in 2D is always
8-connectivity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.graph import MCP_Geometric

__all__ = [
    "ScribbleStyle",
    "StrokeRecord",
    "DEFAULT_SPACING",
    "EIGHT_CONNECTED",
    "check_int",
    "check_label",
    "check_pair",
    "check_rng",
    "check_positive",
    "check_spacing",
    "check_axis",
    "resolve_axis",
    "check_params_fit",
    "plane_spacing",
    "ellipsoid_footprint",
    "output_dtype",
    "geodesic_path",
    "polyline_mask",
    "thicken",
    "largest_piece",
    "disk_footprint",
]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
"""2D structuring element of 8-connectivity, used for every component and stroke."""


DEFAULT_SPACING = (1.0, 1.0, 1.0)
"""Voxel spacing (mm per axis) assumed when a caller gives none."""


@dataclass(frozen=True)
class StrokeRecord:
    """One stroke (or prompt) drawn on one 2D slice or across slices in 3D.

    Attributes:
        axis: axis of the 3D label the slice is taken along; None for a 3D stroke.
        slice_index: index of the slice along ``axis``; None for a 3D stroke.
        class_id: class the stroke annotates.
        kind: ``"interior"`` or ``"boundary"`` (slicewise), ``"line"``, ``"centreline"``,
            ``"contour"``, ``"click"``, ``"box"`` or ``"slice"``.
        mask: bool array [A, B], the slice ``np.take(label, slice_index, axis)``, True on the stroke;
            for a 3D stroke bool [X, Y, Z].
        erosion: for boundary strokes the erosion (px) actually used, else None.
    """

    axis: int | None
    slice_index: int | None
    class_id: int
    kind: str
    mask: np.ndarray
    erosion: int | None = None


class ScribbleStyle(ABC):
    """A way of simulating scribbles; subclasses register with ``register_scribble_style``.

    The constructor holds the configuration (keyword-only); :meth:`get_params` returns it.

    Attributes:
        name: the registered name (set by ``register_scribble_style``).
        label_priority: where a habit combines styles, annotations of a higher priority win over
            those of a lower one (a box's background-by-exclusion has 0, everything else 1).
    """

    name: ClassVar[str] = ""
    label_priority: ClassVar[int] = 1

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dict (constructor keyword -> value)."""

    @abstractmethod
    def make_params(self, label: np.ndarray, *, ignore_label: int, rng: np.random.Generator,
                    spacing: Sequence[float] = DEFAULT_SPACING) -> dict:
        """Draw the random choices for ``label`` (int array [X, Y, Z]) into a JSON-serialisable dict.

        ``spacing`` is the voxel size in mm along X, Y, Z; styles without distances may ignore it.
        """

    @abstractmethod
    def apply(self, label: np.ndarray, params: dict, *, ignore_label: int,
              spacing: Sequence[float] = DEFAULT_SPACING, return_strokes: bool = False):
        """Draw the strokes of ``params`` on ``label``; deterministic given ``params``.

        ``spacing`` must be the one given to :meth:`make_params`.

        Returns:
            The partial label [X, Y, Z] (uint8, or uint16 if ``ignore_label`` > 255), or the pair
            ``(partial, list[StrokeRecord])`` if ``return_strokes``.
        """

    def max_stray_mm(self, params: dict) -> float:
        """How far (mm) a voxel annotated with class k may lie from the nearest voxel of class k.

        0 (the default) means every annotated voxel carries its true class; styles that deform
        their strokes return the deformation's magnitude recorded in ``params``.
        """
        return 0.0

    def __call__(self, label: np.ndarray, *, ignore_label: int, rng: np.random.Generator,
                 spacing: Sequence[float] = DEFAULT_SPACING) -> np.ndarray:
        """``apply(label, make_params(label, ...))``."""
        params = self.make_params(label, ignore_label=ignore_label, rng=rng, spacing=spacing)
        return self.apply(label, params, ignore_label=ignore_label, spacing=spacing)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def check_label(label, ignore_label: int) -> np.ndarray:
    """Validate a dense label and return it as int64 [X, Y, Z].

    Args:
        label: int or whole-float array [X, Y, Z]; values 0..K-1 are classes (0 is background).
        ignore_label: value written where nothing is annotated; must not occur in ``label``.

    Raises:
        ValueError: not 3D, empty, non-integer or negative values, or ``ignore_label`` invalid or
            already present.
    """
    if isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer)):
        raise ValueError(f"ignore_label must be an int in [0, 65535], got {ignore_label!r}")
    if not 0 <= int(ignore_label) <= 65535:
        raise ValueError(f"ignore_label must be in [0, 65535], got {ignore_label}")
    arr = np.asarray(label)
    if arr.ndim != 3:
        raise ValueError(f"label must be a 3D array [X, Y, Z], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"label is empty, shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError("label must hold whole numbers (class indices); got non-integer floats")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"label must have an integer or whole-float dtype, got {arr.dtype}")
    arr = arr.astype(np.int64)
    low, high = int(arr.min()), int(arr.max())
    if low < 0:
        raise ValueError(f"label values must be class indices >= 0, got minimum {low}")
    if high > 65535:
        raise ValueError(f"label values must be <= 65535, got maximum {high}")
    if np.any(arr == ignore_label):
        raise ValueError(
            f"label already contains the ignore value {ignore_label}; pass a dense label "
            f"(classes 0..K-1) and an ignore_label that is not one of its classes (e.g. {high + 1})"
        )
    return arr


def check_int(name: str, value, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an int (not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_pair(name: str, value) -> tuple:
    """Return ``value`` as a tuple if it is a (min, max) pair, else raise ValueError."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
    return tuple(value)


def check_positive(name: str, value, unit: str = "mm") -> float:
    """Return ``value`` as a float if it is a positive finite number, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 < value < np.inf:
        raise ValueError(f"{name} must be a positive number of {unit}, got {value!r}")
    return float(value)


def check_rng(rng) -> np.random.Generator:
    """Return ``rng`` if it is a numpy Generator, else raise TypeError."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}")
    return rng


def check_spacing(spacing) -> tuple[float, float, float]:
    """Return ``spacing`` as three positive finite floats (mm along X, Y, Z), else raise ValueError."""
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be three voxel sizes in mm (e.g. (1.0, 1.0, 3.0)), got {spacing!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive voxel sizes in mm (e.g. (1.0, 1.0, 3.0)), got {spacing!r}")
    return values


def check_axis(axis) -> int | str:
    """Return ``axis`` (an int in [-3, 2] or ``"auto"``) normalised, else raise ValueError."""
    if axis == "auto":
        return "auto"
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis <= 2:
        raise ValueError(f"axis must be an int in [-3, 2] or 'auto', got {axis!r}")
    return int(axis)


def resolve_axis(axis: int | str, shape: tuple[int, ...]) -> int:
    """The axis 0..2 that ``axis`` names; ``"auto"`` is the axis with the most slices (the last such)."""
    if axis == "auto":
        return int(len(shape) - 1 - np.argmax(shape[::-1]))
    return int(axis) % 3


def plane_spacing(spacing: Sequence[float], axis: int) -> tuple[float, float]:
    """Spacing of the two in-plane axes of a slice taken along ``axis``, in their order."""
    return tuple(float(s) for i, s in enumerate(spacing) if i != axis)


def check_params_fit(params: dict, name: str, shape: tuple[int, ...], spacing: Sequence[float] | None = None) -> None:
    """Raise ValueError unless ``params`` were made by style ``name`` for this shape (and spacing)."""
    if params.get("style", name) != name:
        raise ValueError(f"params were made by style {params['style']!r}, not {name!r}")
    if list(params.get("shape", [])) != list(shape):
        raise ValueError(f"params were made for a label of shape {params.get('shape')}, got {tuple(shape)}")
    made = params.get("spacing")
    if spacing is not None and made is not None and not np.allclose(made, spacing, rtol=0, atol=1e-6):
        raise ValueError(f"params were made for spacing {made} mm, got {list(spacing)}; pass the same spacing to apply")


def ellipsoid_footprint(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Bool footprint of a ball of ``radius_mm`` on a grid of ``spacing`` (2 or 3 axes, mm).

    The centre is always included, so a radius below the voxel size gives one voxel; along a coarse
    axis the footprint has fewer voxels (radius 2 mm, spacing (1, 1, 3): 5 x 5 x 1).
    """
    half = [int(np.floor(radius_mm / s + 1e-9)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    footprint = sum(g ** 2 for g in grids) <= radius_mm ** 2 + 1e-9
    footprint[tuple(half)] = True
    return footprint


def output_dtype(label: np.ndarray, ignore_label: int) -> np.dtype:
    """uint8 if the classes and ``ignore_label`` fit in it, else uint16."""
    return np.dtype(np.uint8 if max(int(label.max()), int(ignore_label)) <= 255 else np.uint16)


def disk_footprint(thickness: int) -> np.ndarray:
    """Bool footprint [t, t] of a disk of diameter ``thickness`` (t=1: one pixel, t=3: 3x3)."""
    c = (thickness - 1) / 2
    yy, xx = np.mgrid[:thickness, :thickness]
    return (yy - c) ** 2 + (xx - c) ** 2 <= (thickness / 2) ** 2


def largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D bool mask (empty mask -> empty mask)."""
    lab, n = ndi.label(mask, structure=EIGHT_CONNECTED)
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())[1:]
    return lab == 1 + int(np.argmax(sizes))


def thicken(centre: np.ndarray, region: np.ndarray, thickness: int) -> np.ndarray:
    """Dilate a connected stroke centreline [A, B] to ``thickness`` px, only within ``region``.

    Dilated pixels that ``region`` separates from the centreline are dropped, so a connected
    centreline stays one 8-connected stroke.
    """
    if thickness <= 1 or not centre.any():
        return centre & region
    grown = ndi.binary_dilation(centre, structure=disk_footprint(thickness)) & region
    lab, _ = ndi.label(grown, structure=EIGHT_CONNECTED)
    keep = np.unique(lab[centre & region])
    return np.isin(lab, keep[keep > 0])


def geodesic_path(cost: np.ndarray, points: list[tuple[int, int]]) -> np.ndarray:
    """Cheapest 8-connected path through ``points`` in order (Dijkstra, ``skimage.graph``).

    Args:
        cost: float array [A, B]; ``np.inf`` marks pixels the path may not enter.
        points: (row, col) pixels with finite cost, visited in order; all must be reachable.

    Returns:
        int array [N, 2] of the path's (row, col) pixels in order, consecutive pixels 8-adjacent.
    """
    path = [np.asarray([points[0]])]
    for start, end in zip(points[:-1], points[1:]):
        if tuple(start) == tuple(end):
            continue
        mcp = MCP_Geometric(cost, fully_connected=True)
        mcp.find_costs([start], [end])
        path.append(np.asarray(mcp.traceback(end))[1:])
    return np.concatenate(path).astype(int)


def polyline_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool mask [A, B] of the 8-connected polyline through ``points`` (int [N, 2], in bounds)."""
    mask = np.zeros(shape, dtype=bool)
    mask[points[:, 0], points[:, 1]] = True
    jumps = np.flatnonzero(np.abs(np.diff(points, axis=0)).max(axis=1) > 1)
    for i in jumps:
        rr, cc = draw_line(*points[i], *points[i + 1])
        mask[rr, cc] = True
    return mask
