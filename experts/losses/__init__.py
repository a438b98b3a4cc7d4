"""Training losses as registered terms (config ``loss.terms``); see :mod:`experts.losses.terms`.

Every term takes ``(outputs: NetOutput, batch: Batch)`` and returns a dict whose ``loss`` entry is
weighted into the total and whose other entries are logged. Registered here:

- ``partial_dice_ce``: nnU-Net's Dice + CE on annotated voxels only (the default, alone).
"""

from experts.losses.partial import PartialDiceCE, PartialDiceCELoss, partial_cross_entropy, partial_soft_dice
from experts.losses.terms import LOSS_TERMS, LossTerm, TermContext, TermSpec, TrainingLoss, build_loss, register_term

__all__ = [
    "LOSS_TERMS",
    "LossTerm",
    "TermContext",
    "TermSpec",
    "TrainingLoss",
    "build_loss",
    "register_term",
    "PartialDiceCE",
    "PartialDiceCELoss",
    "partial_cross_entropy",
    "partial_soft_dice",
]
