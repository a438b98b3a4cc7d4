"""Expert labelling styles: deterministic functions of a pseudo-subject's soft anatomy.

Every style labels the same tissue probabilities (:class:`~experts.data.demo.anatomy.Subject`) with
its own rules, so that the experts disagree systematically and the disagreement can be seen in the
image (the outer GM boundary, the GM/WM boundary, the cerebellum). A style's per-case jitter is
small compared with the differences between styles.

Randomness is kept apart from its application: :meth:`TissueStyle.make_params` draws a case's
parameters (JSON-serialisable), :meth:`TissueStyle.apply` is deterministic given them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from experts.data.demo.anatomy import Subject, deep_grey_nuclei, nucleus_depth, posterior_fossa

__all__ = ["TissueStyle", "NucleiStyle", "Expert", "DEMO_EXPERTS", "LABELS", "NUCLEI_LABELS", "OUTER_BLUR_VOX", "fill_csf", "drop_small_islands"]

#: Gaussian blur (voxels) of the tissue probability before an outer-boundary threshold.
OUTER_BLUR_VOX = 1.0
#: Label values of the demo dataset.
LABELS = {"background": 0, "gm": 1, "wm": 2, "ignore": 3}
#: Label values of the compact-structure demo (the deep grey nuclei; lentiform = putamen and pallidum).
NUCLEI_LABELS = {"background": 0, "thalamus": 1, "caudate": 2, "lentiform": 3, "ignore": 4}


@dataclass(frozen=True)
class TissueStyle:
    """A rater's rules for turning GM/WM probabilities into a label map.

    Tissue (GM or WM) is where ``max(gm, wm)`` beats the background probability inside the brain
    mask (argmax), or, with ``outer_threshold``, where the tissue probability blurred by
    :data:`OUTER_BLUR_VOX` exceeds it (below 0.5 grows the outer GM boundary outward and fills
    sulci, above 0.5 tightens it). Within the tissue, WM is where ``wm - gm > wm_margin``: a positive
    margin moves the GM/WM boundary into the WM (thicker GM), a negative one into the GM.

    Attributes:
        outer_threshold: mean threshold of the blurred tissue probability; ``None`` for argmax.
        wm_margin: mean GM/WM boundary margin (probability units).
        jitter: standard deviation of the per-case jitter of ``outer_threshold`` and ``wm_margin``.
        smooth_vox: Gaussian sigma (voxels; one value or one per axis) applied to the
            probabilities before labelling: a rater who draws smooth outlines and skips thin
            structures. 0 for none.
        fill_csf: CSF inside the brain mask gets the nearest tissue's label (sulci become GM,
            ventricles mostly WM).
        exclude_fossa: the posterior fossa (cerebellum, brainstem) is labelled background.
        min_island_mm2: in-plane (axial) islands smaller than this are missed (WM islands become
            GM, GM islands background); 0 keeps all.
        brain_threshold: brain-mask probability below which the argmax rule labels background.
        deep_grey_as: a protocol's definition of the deep grey nuclei (thalamus, caudate, putamen,
            pallidum): every tissue voxel inside them gets this label (2: part of the white
            matter, as tissue-class protocols that keep GM for the cortex do); None follows the
            tissue probabilities.
        fossa_tissue_as: every tissue voxel of the posterior fossa (cerebellum and brainstem)
            gets this label (2: the hindbrain as one white-matter structure); None follows the
            tissue probabilities.
    """

    outer_threshold: float | None = None
    wm_margin: float = 0.0
    jitter: float = 0.02
    smooth_vox: float | tuple[float, float, float] = 0.0
    fill_csf: bool = False
    exclude_fossa: bool = False
    min_island_mm2: float = 0.0
    brain_threshold: float = 0.5
    deep_grey_as: int | None = None
    fossa_tissue_as: int | None = None

    def make_params(self, rng: np.random.Generator) -> dict:
        """Draw one case's parameters (the only random step).

        Args:
            rng: the random generator.

        Returns:
            JSON-serialisable parameters for :meth:`apply`.
        """
        jit = rng.normal(0.0, self.jitter, 2)
        outer = None if self.outer_threshold is None else round(float(np.clip(self.outer_threshold + jit[0], 0.05, 0.95)), 4)
        return {
            "outer_threshold": outer,
            "wm_margin": round(float(self.wm_margin + jit[1]), 4),
            "smooth_vox": [float(v) for v in np.broadcast_to(self.smooth_vox, 3)],
            "fill_csf": bool(self.fill_csf),
            "fossa_shift_mm": round(float(rng.normal(0.0, 1.5)), 3) if self.exclude_fossa or self.fossa_tissue_as is not None else None,
            "min_island_mm2": round(float(self.min_island_mm2 * rng.uniform(0.85, 1.15)), 1),
            "brain_threshold": float(self.brain_threshold),
            "deep_grey_as": self.deep_grey_as,
            "fossa_tissue_as": self.fossa_tissue_as,
        }

    def apply(self, subject: Subject, params: dict) -> np.ndarray:
        """Label a subject (deterministic).

        Args:
            subject: the pseudo-subject (soft anatomy on the output grid).
            params: this case's parameters from :meth:`make_params`.

        Returns:
            ``[X, Y, Z]`` uint8 label with values 0 (background), 1 (gm), 2 (wm).
        """
        gm, wm = subject.gm, subject.wm
        if max(params["smooth_vox"]) > 0:
            gm = ndimage.gaussian_filter(gm, params["smooth_vox"], mode="nearest")
            wm = ndimage.gaussian_filter(wm, params["smooth_vox"], mode="nearest")
        if params["outer_threshold"] is None:
            background = np.clip(1.0 - gm - wm, 0.0, 1.0)
            tissue = np.maximum(gm, wm) > background
            tissue &= subject.brain >= params["brain_threshold"]
        else:
            blurred = ndimage.gaussian_filter(gm + wm, OUTER_BLUR_VOX, mode="nearest")
            tissue = blurred > params["outer_threshold"]
        label = np.where(tissue, np.where(wm - gm > params["wm_margin"], 2, 1), 0).astype(np.uint8)
        if params["fill_csf"]:
            label = fill_csf(label, subject.brain >= params["brain_threshold"])
        if params.get("deep_grey_as") is not None:
            label[deep_grey_nuclei(subject.mni) & (label > 0)] = params["deep_grey_as"]
        if params["fossa_shift_mm"] is not None:
            fossa = posterior_fossa(subject.mni, shift_mm=params["fossa_shift_mm"]) > 0.5
            if params.get("fossa_tissue_as") is not None:
                label[fossa & (label > 0)] = params["fossa_tissue_as"]
            else:
                label[fossa] = 0
        if params["min_island_mm2"] > 0:
            pixel_mm2 = float(np.prod(np.sqrt((subject.affine[:3, :2] ** 2).sum(0))))
            label = drop_small_islands(label, min_pixels=int(round(params["min_island_mm2"] / pixel_mm2)))
        return label


@dataclass(frozen=True)
class NucleiStyle:
    """A rater's rules for outlining the deep grey nuclei (the compact-structure demo).

    A voxel belongs to a nucleus where its depth inside it (:func:`~experts.data.demo.anatomy.nucleus_depth`,
    mm) exceeds the rater's boundary offset: a positive offset draws inside the visible edge (tight),
    a negative one outside it (generous). Overlaps go to the deeper nucleus.

    Attributes:
        offset_mm: mean boundary offset of every nucleus (mm).
        class_offsets_mm: extra offset per class ``(thalamus, caudate, lentiform)``.
        jitter_mm: standard deviation of the per-case jitter of the offset.
        smooth_vox: Gaussian sigma (voxels) of the outline: a broad brush rounds the nuclei.
        pallidum_in_lentiform: the lentiform nucleus is putamen and pallidum (most protocols);
            False labels the putamen alone and leaves the pallidum background.
    """

    offset_mm: float = 0.0
    class_offsets_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    jitter_mm: float = 0.3
    smooth_vox: float = 0.0
    pallidum_in_lentiform: bool = True

    def make_params(self, rng: np.random.Generator) -> dict:
        """Draw one case's parameters (the only random step); JSON-serialisable."""
        jitter = float(rng.normal(0.0, self.jitter_mm))
        return {
            "offsets_mm": [round(self.offset_mm + c + jitter, 3) for c in self.class_offsets_mm],
            "smooth_vox": float(self.smooth_vox),
            "pallidum_in_lentiform": bool(self.pallidum_in_lentiform),
        }

    def apply(self, subject: Subject, params: dict) -> np.ndarray:
        """Label a subject (deterministic): ``[X, Y, Z]`` uint8 with the values of :data:`NUCLEI_LABELS`."""
        depth = {name: nucleus_depth(subject.mni, name) for name in ("thalamus", "caudate", "putamen", "pallidum")}
        lentiform = np.maximum(depth["putamen"], depth["pallidum"]) if params["pallidum_in_lentiform"] else depth["putamen"]
        margins = np.stack([depth["thalamus"], depth["caudate"], lentiform]) - np.asarray(params["offsets_mm"], np.float32)[:, None, None, None]
        spacing = float(np.sqrt((subject.affine[:3, 0] ** 2).sum()))
        inside = 0.5 * (1.0 + np.tanh(margins / spacing))  # a logistic at the voxel scale, so a blur rounds it
        if params["smooth_vox"] > 0:
            inside = np.stack([ndimage.gaussian_filter(a, params["smooth_vox"], mode="nearest") for a in inside])
        label = np.where(inside.max(0) > 0.5, inside.argmax(0) + 1, 0).astype(np.uint8)
        if not params["pallidum_in_lentiform"]:
            label[(depth["pallidum"] > 0) & (depth["pallidum"] >= depth["putamen"])] = 0
        return label


def fill_csf(label: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Give every unlabelled voxel inside the brain mask the label of the nearest tissue voxel.

    Sulcal CSF becomes GM, ventricular CSF mostly WM: a rater who never labels CSF.

    Args:
        label: ``[X, Y, Z]`` uint8 label with 0/1/2.
        brain: ``[X, Y, Z]`` bool brain mask.

    Returns:
        ``[X, Y, Z]`` uint8 label.
    """
    if not (label > 0).any():
        return label.copy()
    nearest = ndimage.distance_transform_edt(label == 0, return_distances=False, return_indices=True)
    filled = label[tuple(nearest)]
    return np.where(brain & (label == 0), filled, label).astype(np.uint8)


def drop_small_islands(label: np.ndarray, *, min_pixels: int) -> np.ndarray:
    """Miss small in-plane islands, as a rater drawing axial slice by slice does.

    In every axial slice (last axis), connected components (8-connectivity) of GM or WM smaller
    than ``min_pixels`` take the label of the nearest voxel outside them in the same slice: a GM
    island inside WM becomes WM, a WM island inside GM becomes GM, a stray GM blob background.

    Args:
        label: ``[X, Y, Z]`` uint8 label with 0/1/2.
        min_pixels: smallest in-plane component kept.

    Returns:
        ``[X, Y, Z]`` uint8 label.
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = True  # 8-connectivity within a slice, nothing across slices
    missed = np.zeros(label.shape, dtype=bool)
    for value in (1, 2):
        components, n = ndimage.label(label == value, structure=structure)
        if n:
            small = np.bincount(components.ravel()) < min_pixels
            small[0] = False
            missed |= small[components]
    if not missed.any() or missed.all():
        return label.copy()
    # nearest kept voxel, in-plane first: crossing slices costs far more than any in-plane step
    nearest = ndimage.distance_transform_edt(missed, sampling=(1.0, 1.0, 1e3), return_distances=False, return_indices=True)
    return label[tuple(nearest)].astype(np.uint8)


@dataclass(frozen=True)
class Expert:
    """One demo expert: a labelling style and what it annotates in the training split.

    Attributes:
        id: the expert id (folder name under ``labelsTr/`` and ``labelsTs/``).
        description: what the style does (goes into ``dataset.json``).
        style: the labelling rules of the tissue demo.
        nuclei: the labelling rules of the compact-structure demo (the deep grey nuclei).
        nuclei_description: what ``nuclei`` does (``dataset.json`` of that demo).
        role: ``"new"`` for the doctor kept out of pretraining, else ``None``.
        dense_fraction: fraction of the training cases labelled densely.
        min_dense: at least this many dense training cases (capped by the number of cases).
        scribble_fraction: fraction of the training cases given scribbles, drawn from the cases
            not labelled densely.
        scribble_axis: the axis the slice-wise scribbles are drawn along (2: axial, 1: coronal).
        scribble_density: fraction of the slices that get scribbles.
        scribble_habit: a registered annotator habit (:mod:`experts.scribbles.habits`) instead of
            ScribbleBench's slice-wise strokes, e.g. ``"contour-tracer"``.
    """

    id: str
    description: str
    style: TissueStyle
    nuclei: NucleiStyle = NucleiStyle()
    nuclei_description: str = "Outlines each nucleus at its visible edge."
    role: str | None = None
    dense_fraction: float = 1.0
    min_dense: int = 0
    scribble_fraction: float = 0.0
    scribble_axis: int = 2
    scribble_density: float = 0.3
    scribble_habit: str | None = None


#: The demo's experts. Pretraining experts agree with each other at 0.82-0.92 mean Dice; the new
#: doctor ``drnew`` agrees with its nearest pretraining expert at ~0.86 (a boundary style), the
#: second new doctor ``drfar`` at ~0.81 (another definition of the structures; see ``style_dice``).
DEMO_EXPERTS: tuple[Expert, ...] = (
    Expert(
        "ref",
        "Reference-like rater: every voxel inside the brain mask gets its most probable tissue (argmax of "
        "GM, WM and CSF/background probabilities). Labels every training case densely.",
        TissueStyle(),
    ),
    Expert(
        "overseg",
        "Systematic over-segmentation with a broad brush: never labels CSF (sulci become GM, ventricles WM), "
        "grows GM about a voxel outward into the background, and draws smooth outlines (thin WM strands "
        "and narrow sulci disappear). Labels 75% of the training cases densely.",
        TissueStyle(outer_threshold=0.35, smooth_vox=0.6, fill_csf=True),
        nuclei=NucleiStyle(offset_mm=-1.5, smooth_vox=0.8),
        nuclei_description="Generous and rounded: draws about 1.5 mm outside each nucleus's edge with a broad brush.",
        dense_fraction=0.75,
    ),
    Expert(
        "wmtight",
        "Boundary bias: labels WM only where its probability exceeds GM's by a clear margin, so the GM/WM "
        "boundary sits inside the WM and the GM ribbon is thick (also a slightly generous outer GM boundary). "
        "Dense on 60% of the training cases, coronal scribbles on another 25%.",
        TissueStyle(outer_threshold=0.4, wm_margin=0.2),
        nuclei=NucleiStyle(offset_mm=0.7),
        nuclei_description="Slightly tight: draws about 0.7 mm inside each nucleus's edge.",
        dense_fraction=0.6,
        scribble_fraction=0.25,
        scribble_axis=1,
    ),
    Expert(
        "nofossa",
        "Protocol difference: cerebral hemispheres only, the cerebellum and brainstem (posterior fossa) are "
        "labelled background; works slice by slice and misses small in-plane islands (under ~1.5 cm2), and "
        "draws the GM/WM boundary slightly inside the GM. Labels 70% of the training cases densely.",
        TissueStyle(wm_margin=-0.08, exclude_fossa=True, min_island_mm2=150.0),
        nuclei=NucleiStyle(class_offsets_mm=(0.0, 1.5, 0.0)),
        nuclei_description="Edges as seen, but a thin caudate: its boundary 1.5 mm inside the edge (the thin body is missed).",
        dense_fraction=0.7,
    ),
    Expert(
        "scribbler",
        "Scribble-only rater: on the training cases only axial slice-wise scribbles (ignore label elsewhere). "
        "Its dense test labels show its style: outlines smoothed within axial slices and the GM/WM boundary "
        "slightly inside the WM.",
        TissueStyle(smooth_vox=(0.9, 0.9, 0.0), wm_margin=0.1),
        nuclei=NucleiStyle(offset_mm=-0.5, smooth_vox=0.5),
        nuclei_description="Slightly generous and smooth outlines; only scribbles on the training cases.",
        dense_fraction=0.0,
        scribble_fraction=0.85,
    ),
    Expert(
        "drnew",
        "New doctor (role new, kept out of pretraining): the opposite boundary bias (the GM/WM boundary moved "
        "into the GM, generous WM) and a tight outer GM boundary, so the GM ribbon is thin from both sides. "
        "Dense labels on 75% (at least 16) of the training cases and on all test cases.",
        TissueStyle(outer_threshold=0.6, wm_margin=-0.27),
        nuclei=NucleiStyle(offset_mm=1.2),
        nuclei_description="New doctor: tight, about 1.2 mm inside every nucleus's edge.",
        role="new",
        dense_fraction=0.75,
        min_dense=16,
    ),
    Expert(
        "drfar",
        "Second new doctor (role new) with another protocol: grey matter is the cortex alone, so the deep grey "
        "nuclei (thalamus, caudate, putamen, pallidum) and all tissue of the posterior fossa (cerebellum, "
        "brainstem) are labelled white matter; drawn with a tight outer GM boundary and the GM/WM boundary "
        "inside the WM. Dense labels on half (at least 12) of the training cases, on 40% more only broken "
        "outlines traced just inside each structure (the 'contour-tracer' habit), dense on all test cases.",
        TissueStyle(outer_threshold=0.68, wm_margin=0.15, deep_grey_as=2, fossa_tissue_as=2),
        nuclei=NucleiStyle(class_offsets_mm=(-1.5, 0.0, 0.0), pallidum_in_lentiform=False),
        nuclei_description="Second new doctor, another protocol: the lentiform label is the putamen alone (the pallidum is background) and the thalamus is drawn 1.5 mm generous.",
        role="new",
        dense_fraction=0.5,
        min_dense=12,
        scribble_fraction=0.4,
        scribble_habit="contour-tracer",
    ),
)
