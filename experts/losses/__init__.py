"""Training losses, registered by name (config key ``loss.name``).

Every loss takes ``(logits [B,K,D,H,W], target [B,1,D,H,W])`` and returns a dict whose ``loss``
entry is backpropagated and whose other entries are logged as loss parts.
"""

from experts.losses.partial import PartialDiceCELoss, partial_cross_entropy, partial_soft_dice
from experts.registry import Registry

__all__ = ["LOSSES", "create_loss", "PartialDiceCELoss", "partial_cross_entropy", "partial_soft_dice"]

LOSSES: Registry = Registry("loss")
LOSSES.register("partial_dice_ce")(PartialDiceCELoss)


def create_loss(name: str, **kwargs):
    """Build the loss registered as ``name`` (e.g. ``"partial_dice_ce"``)."""
    return LOSSES.create(name, **kwargs)
