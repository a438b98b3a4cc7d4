"""Datasets feeding the trainer: cached preprocessed volumes and seeded training patches.

Images are preprocessed and cached once per case, labels once per (case, expert): six experts'
labels of one scan share one cached image. A training sample is addressed by ``(item_index, seed)``
(see :class:`~experts.training.sampling.ExpertBalancedSampler`), so patches are reproducible.
"""

from __future__ import annotations

import torch
from monai.data import CacheDataset, Dataset

from experts.data.plan import Plan
from experts.data.transforms import INDICES_KEY, image_preprocessing, label_preprocessing
from experts.training.sampling import SampleItem

__all__ = ["VolumeCache", "PatchDataset"]


class VolumeCache:
    """Preprocessed images per case and labels per (case, expert).

    Args:
        plan: preprocessing plan.
        images: case -> channel file paths.
        labels: (case, expert) -> label file path.
        pad: pad to the patch size and store crop indices (training); off for validation.
        cache: keep everything in memory (MONAI ``CacheDataset``); off loads on every access.
        num_workers: threads used to fill the cache.
        progress: show the cache's progress bar.
    """

    def __init__(self, plan: Plan, *, images: dict, labels: dict, pad: bool = True, cache: bool = True, num_workers: int = 0, progress: bool = False):
        self.spacing = tuple(float(s) for s in plan.spacing)
        self.case_index = {c: i for i, c in enumerate(sorted(images))}
        self.label_index = {k: i for i, k in enumerate(sorted(labels))}
        image_items = [{"image": [str(p) for p in images[c]]} for c in sorted(images)]
        label_items = [{"label": str(labels[k])} for k in sorted(labels)]
        img_tf = image_preprocessing(plan, pad=pad)
        lab_tf = label_preprocessing(plan, pad=pad, indices=pad)
        if cache:
            kw = dict(cache_rate=1.0, num_workers=num_workers or None, progress=progress, copy_cache=False)
            self._images = CacheDataset(image_items, img_tf, **kw)
            self._labels = CacheDataset(label_items, lab_tf, **kw) if label_items else []
        else:
            self._images = Dataset(image_items, img_tf)
            self._labels = Dataset(label_items, lab_tf)

    def image(self, case: str) -> torch.Tensor:
        """``[C, D, H, W]`` preprocessed image (a MONAI MetaTensor)."""
        return self._images[self.case_index[case]]["image"]

    def label(self, case: str, expert: str) -> dict:
        """``{"label": [1, D, H, W], INDICES_KEY: ...}`` for one expert's label of one case."""
        return self._labels[self.label_index[(case, expert)]]

    def cases(self) -> list[str]:
        return list(self.case_index)


class PatchDataset(torch.utils.data.Dataset):
    """Training patches addressed by ``(item_index, seed)``.

    Returns ``{"image": [C, *patch], "label": [1, *patch], "expert": LongTensor[], "spacing": [3]}``
    (the plan's spacing in mm); :func:`~experts.records.collate_batch` stacks them into a batch.
    """

    def __init__(self, cache: VolumeCache, items: list[SampleItem], augmentation):
        self.cache = cache
        self.items = items
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        index, seed = key
        item = self.items[index]
        lab = self.cache.label(item.case, item.expert)
        data = {"image": self.cache.image(item.case), "label": lab["label"], INDICES_KEY: lab[INDICES_KEY]}
        self.augmentation.set_random_state(seed=seed)
        out = self.augmentation(data)
        if isinstance(out, list):
            out = out[0]
        return {
            "image": torch.as_tensor(out["image"]).float(),
            "label": torch.as_tensor(out["label"]).long(),
            "expert": torch.tensor(item.row, dtype=torch.long),
            "spacing": torch.tensor(self.cache.spacing, dtype=torch.float32),
        }
