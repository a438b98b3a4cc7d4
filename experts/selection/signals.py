"""What a case-selection strategy may know about a case: the existing experts' view of its image.

:func:`case_signals` runs the model conditioned on each existing expert over the whole volume
(sliding-window inference, :mod:`experts.inference`) and keeps, per case, a few numbers and one
vector (:class:`CaseSignals`). Nothing here reads a label file: strategies see images and the
existing experts only, never the new doctor's labels.

- ``foreground_ml``: the predicted foreground volume, the sum over voxels of ``1 - p(background)``
  of the mean of the experts' probabilities, times the voxel volume (mL);
- ``disagreement``: the mean over the volume of the mutual information between expert and label
  (:func:`experts.predictor.disagreement`, nats); ``disagreement_foreground``: its mean over the
  voxels that any expert labels foreground;
- ``features``: the bottleneck feature map (``encoder.<last level>``), averaged over the experts,
  pooled into its per-channel mean and standard deviation over the volume (``[2F]``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CaseSignals", "SIGNALS", "bottleneck_feature", "network_with_features", "case_signals"]

#: the signals a strategy may ask for (``SelectionStrategy.needs``)
SIGNALS = ("foreground", "disagreement", "features")


@dataclass
class CaseSignals:
    """The existing experts' view of one case (``None``: not computed, no strategy asked for it)."""

    case: str
    foreground_ml: float | None = None
    disagreement: float | None = None
    disagreement_foreground: float | None = None
    features: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready, without the feature vector."""
        return {"case": self.case, "foreground_ml": self.foreground_ml, "disagreement": self.disagreement, "disagreement_foreground": self.disagreement_foreground}


def bottleneck_feature(net) -> str:
    """The name of the deepest encoder feature a network can return (``encoder.<last level>``)."""
    levels = [n for n in net.feature_names if n.startswith("encoder.") and n.split(".", 1)[1].isdigit()]
    if not levels:
        raise ValueError(f"{type(net).__name__} returns no encoder features (it returns {', '.join(net.feature_names)}); diversity needs one")
    return max(levels, key=lambda n: int(n.split(".", 1)[1]))


def network_with_features(bundle, features: Sequence[str], *, device="cpu"):
    """A copy of ``bundle``'s network, rebuilt from its architecture so that its output carries
    ``features`` (weights, rows and private heads as in the bundle; the bundle is untouched)."""
    from experts.bundle import build_network

    source = copy.deepcopy(bundle.network).cpu()
    source.merge_row_blocks()
    arch = {**bundle.arch, "kwargs": {**bundle.arch.get("kwargs", {}), "features": list(features)}}
    net = build_network(arch, plan=bundle.plan, num_experts=source.num_experts)
    for row in source.expert_head_rows():
        net.add_expert_head(row)
    net.load_state_dict(source.state_dict())
    return net.to(device).eval()


def case_signals(
    bundle,
    images: Mapping[str, Sequence],
    *,
    experts: Sequence[str],
    needs: Iterable[str] = SIGNALS,
    device="cpu",
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    blend: str = "gaussian",
    progress: bool = False,
) -> list[CaseSignals]:
    """The signals ``needs`` of every case, in the order of ``images``.

    Args:
        bundle: the model (:class:`~experts.bundle.ModelBundle`).
        images: case id -> its channel files, in channel order.
        experts: the existing experts whose rows are asked (never the new doctor's own row).
        needs: which of :data:`SIGNALS` to compute; none of them: no prediction at all.
        device / overlap / sw_batch_size / blend: of the sliding-window inference.
        progress: show a progress bar.

    Raises:
        ValueError: an unknown signal, or no expert to ask.
    """
    needs = set(needs)
    unknown = needs - set(SIGNALS)
    if unknown:
        raise ValueError(f"unknown signal(s) {', '.join(sorted(unknown))}; known: {', '.join(SIGNALS)}")
    if not needs:
        return [CaseSignals(case=c) for c in images]
    if not experts:
        raise ValueError("no existing expert to predict with; the model needs at least one expert besides the new doctor")
    from tqdm.auto import tqdm

    from experts.data.transforms import image_preprocessing

    feature = bottleneck_feature(bundle.network) if "features" in needs else None
    net = network_with_features(bundle, [feature], device=device) if feature else bundle.network
    rows = [bundle.row(e) for e in experts]
    prepare = image_preprocessing(bundle.plan, pad=False)
    voxel_ml = float(np.prod(bundle.plan.spacing)) / 1000.0
    out = []
    for case, paths in tqdm(images.items(), desc="suggest", unit="case", disable=not progress, leave=False):
        image = prepare({"image": [str(p) for p in paths]})["image"].as_tensor()
        probs, feats = _sweep(net, image, rows, feature=feature, plan=bundle.plan, device=device, overlap=overlap, sw_batch_size=sw_batch_size, blend=blend)
        out.append(_summarise(case, probs, feats, voxel_ml=voxel_ml))
    return out


def _sweep(net, image, rows, *, feature, plan, device, overlap, sw_batch_size, blend):
    from experts.inference import predict_experts, predict_experts_with_features

    kw = dict(patch_size=plan.patch_size, overlap=overlap, sw_batch_size=sw_batch_size, blend=blend, device=device)
    if feature is None:
        return predict_experts(net, image, rows, **kw).numpy(), None
    probs, feats = predict_experts_with_features(net, image, rows, feature=feature, **kw)
    return probs.numpy(), feats.numpy()


def _summarise(case: str, probs: np.ndarray, feats: np.ndarray | None, *, voxel_ml: float) -> CaseSignals:
    """``probs [E, K, D, H, W]``, ``feats [F, d, h, w]`` -> the case's signals."""
    from experts.predictor import disagreement

    mi = disagreement(probs)
    labelled = (probs.argmax(axis=1) > 0).any(axis=0)
    foreground = float((1.0 - probs.mean(axis=0)[0]).sum()) * voxel_ml
    pooled = None if feats is None else np.concatenate([feats.mean(axis=(1, 2, 3)), feats.std(axis=(1, 2, 3))]).astype(np.float64)
    return CaseSignals(
        case=case,
        foreground_ml=foreground,
        disagreement=float(mi.mean()),
        disagreement_foreground=float(mi[labelled].mean()) if labelled.any() else 0.0,
        features=pooled,
    )
