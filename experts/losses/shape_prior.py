"""Shape prior (ZScribbleSeg, arXiv 2605.06266): each foreground class is one connected object.

The target is the prediction's own argmax with every foreground class cut to its largest connected
component (scipy.ndimage, face connectivity by default); voxels of a class outside that component
go to the background. The loss is the cross-entropy against this target on the unannotated voxels
where it differs from the argmax, averaged over the unannotated voxels::

    L = sum_{i unannotated, t_i != argmax_i} -log p_{i, t_i} / #unannotated

On the other unannotated voxels the cross-entropy against the argmax would be plain self-training
(entropy minimisation), a different regulariser; leaving it out makes a prediction that already is
a single blob per class cost exactly 0. The components are found on the CPU, on the detached
argmax; the gradient flows through ``p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from experts.errors import ConfigError
from experts.losses.terms import LossTerm, register_term
from experts.records import Batch, NetOutput

__all__ = ["ShapePrior", "largest_component_target"]


def largest_component_target(argmax: np.ndarray, num_classes: int, *, connectivity: int = 1) -> np.ndarray:
    """``argmax [D, H, W]`` with each class ``1..K-1`` cut to its largest connected component (the
    rest set to 0)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, connectivity)
    out = argmax.copy()
    for c in range(1, num_classes):
        labels, n = ndimage.label(argmax == c, structure=structure)
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            out[(labels > 0) & (labels != 1 + int(np.argmax(sizes)))] = 0
    return out


@register_term("shape_prior")
class ShapePrior(LossTerm):
    """Cross-entropy towards the prediction's largest component per class (off by default; see the
    module docstring). Params: ``connectivity`` (1: faces, 2: edges, 3: corners). Parts:
    ``changed_fraction`` (unannotated voxels the cut moves to the background)."""

    @dataclass
    class Params:
        connectivity: int = 1

    def __init__(self, context, **params):
        super().__init__(context, **params)
        if self.params.connectivity not in (1, 2, 3):
            raise ConfigError(f"loss term 'shape_prior': connectivity must be 1, 2 or 3, got {self.params.connectivity}")

    def forward(self, outputs: NetOutput, batch: Batch) -> dict[str, torch.Tensor]:
        logits = outputs.logits.to(torch.promote_types(outputs.logits.dtype, torch.float32))  # float16 under AMP; float64 kept
        k = logits.shape[1]
        ignore = self.context.ignore_label
        unannotated = (batch.label[:, 0] == ignore) if ignore is not None else torch.zeros_like(batch.label[:, 0], dtype=torch.bool)
        argmax = logits.detach().argmax(1)
        target = torch.as_tensor(np.stack([largest_component_target(a, k, connectivity=self.params.connectivity) for a in argmax.cpu().numpy()]), device=logits.device)
        changed = unannotated & (target != argmax)
        nll = -logits.log_softmax(1).gather(1, target.unsqueeze(1)).squeeze(1)
        count = unannotated.sum().clamp_min(1)
        loss = (nll * changed).sum() / count
        return {"loss": loss, "changed_fraction": (changed.sum() / count).detach().float()}
