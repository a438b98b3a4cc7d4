"""Predict every requested expert on a case, in the input file's own geometry.

The image goes through the plan's preprocessing (RAS, target spacing, normalisation), one sliding-
window pass gives all experts' probabilities, and the probabilities are resampled back onto the
input's exact grid (its shape and affine) before the argmax, so predictions overlay the scan in 3D
Slicer or ITK-SNAP whatever its orientation and spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.transforms import SpatialResample

from experts.bundle import ModelBundle
from experts.data.nifti import load_volume
from experts.data.plan import check_resampled_size
from experts.data.transforms import image_preprocessing
from experts.inference import predict_experts

__all__ = ["CasePrediction", "predict_case", "disagreement"]


@dataclass
class CasePrediction:
    """All experts' probabilities of one case on the input grid.

    Attributes:
        probabilities: ``[E, K, X, Y, Z]`` float32, in the order of ``experts``.
        experts: expert ids.
        affine: the input image's affine (``[4, 4]``).
    """

    probabilities: np.ndarray
    experts: list[str]
    affine: np.ndarray

    def labels(self) -> np.ndarray:
        """``[E, X, Y, Z]`` argmax per expert."""
        return self.probabilities.argmax(axis=1).astype(np.uint8)

    def consensus(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the experts' probabilities ``[K, X, Y, Z]`` and its argmax ``[X, Y, Z]``."""
        mean = self.probabilities.mean(axis=0)
        return mean, mean.argmax(axis=0).astype(np.uint8)


def disagreement(probabilities: np.ndarray) -> np.ndarray:
    """Per-voxel disagreement between experts, in nats.

    The entropy of the mean distribution minus the mean of the experts' entropies (the mutual
    information between expert and label, the generalised Jensen-Shannon divergence): 0 where all
    experts predict the same distribution, however uncertain, and at most ``log(E)``.

    Args:
        probabilities: ``[E, K, ...]``.

    Returns:
        ``[...]`` float32.
    """
    eps = 1e-8
    p = np.clip(probabilities, eps, 1.0)
    mean = p.mean(axis=0)
    h_mean = -(mean * np.log(mean)).sum(axis=0)
    mean_h = -(p * np.log(p)).sum(axis=1).mean(axis=0)
    return np.clip(h_mean - mean_h, 0.0, None).astype(np.float32)


@torch.no_grad()
def predict_case(
    bundle: ModelBundle,
    image_paths: Sequence[str | Path],
    experts: Sequence[str],
    *,
    device="cpu",
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    blend: str = "gaussian",
) -> CasePrediction:
    """Predict ``experts`` on one case given its channel files (in channel order)."""
    plan = bundle.plan
    if len(image_paths) != plan.num_channels:
        raise ValueError(f"the model expects {plan.num_channels} channel(s) ({', '.join(plan.channel_names)}), got {len(image_paths)} file(s)")
    ref = load_volume(image_paths[0])
    check_resampled_size(ref.array.shape, ref.affine, plan.spacing, where=str(image_paths[0]), patch_size=plan.patch_size)  # before MONAI resamples
    data = image_preprocessing(plan, pad=False)({"image": [str(p) for p in image_paths]})
    image = data["image"]
    rows = [bundle.row(e) for e in experts]
    probs = predict_experts(bundle.network, image.as_tensor(), rows, patch_size=plan.patch_size, overlap=overlap, sw_batch_size=sw_batch_size, blend=blend, device=device)
    e, k = probs.shape[:2]
    from monai.data import MetaTensor

    meta = MetaTensor(probs.reshape(e * k, *probs.shape[2:]), affine=image.affine)
    back = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float64)(meta, dst_affine=torch.as_tensor(ref.affine), spatial_size=ref.array.shape)
    out = torch.as_tensor(back).float().reshape(e, k, *ref.array.shape).numpy()
    out /= np.clip(out.sum(axis=1, keepdims=True), 1e-8, None)
    return CasePrediction(probabilities=out.astype(np.float32), experts=list(experts), affine=ref.affine)
