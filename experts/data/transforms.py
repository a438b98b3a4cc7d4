"""MONAI transform chains for training and inference, built from a :class:`~experts.data.plan.Plan`.

Deterministic preprocessing (load, RAS orientation, resampling, normalisation, padding, class
indices) is kept separate from random augmentation: the first is cached once per volume, the second
is seeded per sample (``Compose.set_random_state(seed)``), so a training sample is a pure function of
``(item, seed)`` and a run can be resumed or replayed exactly. Each chain is one flat ``Compose``:
a nested ``Compose`` inside a caching dataset caches nothing.

Crops of partial labels are centred on annotated voxels: ``ClassesToIndicesd`` with
``num_classes = K`` lists voxels of the classes 0..K-1 only, so the ignore value K is never a crop
centre (``RandCropByPosNegLabeld`` would count it as foreground).
"""

from __future__ import annotations

import numpy as np
import torch
from monai import transforms as T
from monai.config import KeysCollection

from experts.data.plan import Plan

__all__ = [
    "NormalizeChannelsd",
    "image_preprocessing",
    "label_preprocessing",
    "training_augmentation",
    "INDICES_KEY",
]

INDICES_KEY = "label_cls_indices"
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


class NormalizeChannelsd(T.MapTransform):
    """Per-channel intensity normalisation from the plan: ``zscore`` (per image), ``ct`` (global
    clip + z-score with the plan's statistics) or ``none``.

    Args:
        keys: image keys, ``[C, D, H, W]`` tensors.
        plan: gives ``normalization`` and ``ct_stats``.
    """

    def __init__(self, keys: KeysCollection, plan: Plan):
        super().__init__(keys)
        self.modes = list(plan.normalization)
        self.ct_stats = dict(plan.ct_stats)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            out = img.clone() if isinstance(img, torch.Tensor) else torch.as_tensor(np.array(img))
            for c, mode in enumerate(self.modes):
                ch = out[c]
                if mode == "zscore":
                    out[c] = (ch - ch.mean()) / ch.std().clamp_min(1e-8)
                elif mode == "ct":
                    s = self.ct_stats[str(c)]
                    out[c] = (ch.clamp(s["lower"], s["upper"]) - s["mean"]) / s["std"]
            d[key] = out
        return d


def image_preprocessing(plan: Plan, *, pad: bool) -> T.Compose:
    """``{"image": [channel paths]}`` -> ``{"image": MetaTensor [C, D, H, W]}`` in the plan's space.

    Args:
        plan: the preprocessing plan.
        pad: pad to at least the patch size (training); inference leaves the size alone.
    """
    chain = [
        T.LoadImaged(keys="image", ensure_channel_first=True, image_only=True),
        T.Orientationd(keys="image", axcodes=plan.orientation, labels=_RAS_LABELS),
        T.Spacingd(keys="image", pixdim=plan.spacing, mode="bilinear", padding_mode="border"),
        NormalizeChannelsd(keys="image", plan=plan),
    ]
    if pad:
        chain.append(T.SpatialPadd(keys="image", spatial_size=plan.patch_size, value=0.0))
    return T.Compose(chain)


def label_preprocessing(plan: Plan, *, pad: bool, indices: bool) -> T.Compose:
    """``{"label": path}`` -> ``{"label": [1, D, H, W]}`` on the same grid as the image.

    Padding uses the ignore value ``K`` (number of classes), so padded voxels never supervise.
    With ``indices``, voxel indices of each class 0..K-1 are stored under ``INDICES_KEY`` for crops.
    """
    ignore = plan.num_classes
    chain = [
        T.LoadImaged(keys="label", ensure_channel_first=True, image_only=True, dtype=np.float32),
        T.Orientationd(keys="label", axcodes=plan.orientation, labels=_RAS_LABELS),
        T.Spacingd(keys="label", pixdim=plan.spacing, mode="nearest", padding_mode="border"),
    ]
    if pad:
        chain.append(T.SpatialPadd(keys="label", spatial_size=plan.patch_size, value=float(ignore)))
    if indices:
        chain.append(T.ClassesToIndicesd(keys="label", num_classes=plan.num_classes, indices_postfix="_cls_indices", max_samples_per_class=200_000))
    return T.Compose(chain)


def training_augmentation(plan: Plan, *, flip: bool = True, rotate90: bool = False, intensity: bool = True) -> T.Compose:
    """Random crop centred on a voxel of a random annotated class, then flips and intensity noise.

    Input: ``{"image": [C, ...], "label": [1, ...], INDICES_KEY: [...]}``; output tensors of the
    patch size (no metadata). Seed it per sample with ``set_random_state``.
    """
    keys = ["image", "label"]
    chain = [
        T.RandCropByLabelClassesd(
            keys=keys,
            label_key="label",
            spatial_size=plan.patch_size,
            num_classes=plan.num_classes,
            indices_key=INDICES_KEY,
            num_samples=1,
            warn=False,
        ),
    ]
    if flip:
        chain += [T.RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
    if rotate90:
        chain.append(T.RandRotate90d(keys=keys, prob=0.5, spatial_axes=(0, 1)))
    if intensity:
        chain += [
            T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
            T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.3),
            T.RandGaussianNoised(keys="image", prob=0.15, std=0.05),
        ]
    chain.append(T.EnsureTyped(keys=keys, track_meta=False))
    return T.Compose(chain)
