"""Sliding-window inference for several experts at once.

MONAI's ``sliding_window_inference`` passes extra arguments unbatched, so the expert conditioning
goes through a closure: each batch of windows goes through the network's ``expert_logits`` (every
window under every requested expert; a network whose encoder ignores the expert runs it once), so
one sweep over the volume, one set of windows and one blending give every expert's probabilities.
:func:`predict_experts_with_features` sweeps once for the probabilities and one named internal
feature map (e.g. the bottleneck ``encoder.<last level>``), stitched at its own resolution.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.inferers import sliding_window_inference

__all__ = ["predict_experts", "predict_experts_with_features"]


@torch.no_grad()
def predict_experts(
    model: torch.nn.Module,
    image: torch.Tensor,
    rows: Sequence[int],
    *,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    blend: str = "gaussian",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Softmax probabilities of every requested expert.

    Args:
        model: a :class:`~experts.networks.ConditionedNetwork` (``expert_logits(windows, rows)``).
        image: ``[C, D, H, W]`` preprocessed image.
        rows: the experts' rows in the network's CIN tables.
        patch_size: window size ``[D, H, W]``.
        overlap: window overlap fraction.
        sw_batch_size: windows per forward pass.
        blend: ``"gaussian"`` or ``"constant"`` weighting of overlapping windows.
        device: where the network runs; the output stays on the CPU.

    Returns:
        ``[E, K, D, H, W]`` probabilities, ``E = len(rows)``, on the CPU.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [C, D, H, W], got shape {tuple(image.shape)}")
    rows_t = torch.as_tensor(list(rows), dtype=torch.long, device=device)
    n_experts = rows_t.numel()
    if n_experts == 0:
        raise ValueError("no expert requested")
    was_training = model.training
    model.eval()

    def predictor(window: torch.Tensor) -> torch.Tensor:
        probs = model.expert_logits(window, rows_t).float().softmax(dim=2)  # [n, E, K, *patch]
        return probs.reshape(probs.shape[0], -1, *probs.shape[3:])

    x = torch.as_tensor(image).float().unsqueeze(0).to(device)
    out = sliding_window_inference(
        x,
        roi_size=list(patch_size),
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode=blend,
        sw_device=device,
        device="cpu",
    )
    model.train(was_training)
    out = torch.as_tensor(out)[0]
    return out.reshape(n_experts, -1, *out.shape[1:])


@torch.no_grad()
def predict_experts_with_features(
    model: torch.nn.Module,
    image: torch.Tensor,
    rows: Sequence[int],
    *,
    feature: str,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    blend: str = "gaussian",
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every requested expert's probabilities and one feature map averaged over those experts.

    Args:
        model: a :class:`~experts.networks.ConditionedNetwork` whose output carries ``feature``
            (``returned_features``); it runs once per expert and window.
        image: ``[C, D, H, W]`` preprocessed image.
        rows: the experts' rows in the network's CIN tables.
        feature: the name of the feature map (e.g. ``"encoder.3"``); its windows may be smaller
            than the patch (a down-sampled level) and are stitched at that scale.
        patch_size / overlap / sw_batch_size / blend / device: as :func:`predict_experts`.

    Returns:
        ``([E, K, D, H, W]`` probabilities, ``[F, d, h, w]`` the feature map, mean over the
        experts), both on the CPU.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [C, D, H, W], got shape {tuple(image.shape)}")
    if feature not in getattr(model, "returned_features", ()):
        raise ValueError(f"the network does not return feature {feature!r} (it returns {', '.join(model.returned_features) or 'none'}); build it with features=[{feature!r}]")
    rows = [int(r) for r in rows]
    if not rows:
        raise ValueError("no expert requested")
    was_training = model.training
    model.eval()

    def predictor(window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, feats = [], []
        for r in rows:
            out = model(window, torch.full((window.shape[0],), r, dtype=torch.long, device=window.device))
            probs.append(out.logits.float().softmax(dim=1))
            feats.append(out.feature(feature).float())
        return torch.cat(probs, dim=1), torch.stack(feats).mean(0)

    x = torch.as_tensor(image).float().unsqueeze(0).to(device)
    probs, feats = sliding_window_inference(x, roi_size=list(patch_size), sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap, mode=blend, sw_device=device, device="cpu")
    model.train(was_training)
    probs = torch.as_tensor(probs)[0]
    return probs.reshape(len(rows), -1, *probs.shape[1:]), torch.as_tensor(feats)[0]
