"""Training losses as registered terms (config ``loss.terms``); see :mod:`experts.losses.terms`.

Every term takes ``(outputs: NetOutput, batch: Batch)`` and returns a dict whose ``loss`` entry is
weighted into the total and whose other entries are logged. Registered here:

- ``partial_dice_ce``: nnU-Net's Dice + CE on annotated voxels only (the default, alone).

Opt-in scribble regularisers (each off unless named in ``loss.terms``):

- ``masked_crf``: Potts energy on unannotated voxels with a position + intensity kernel (gated CRF);
- ``attentive_similarity``: the same Potts form with the network's self-attention as the kernel
  (AttenScribble; needs ``network.attention`` and the feature ``attention``);
- ``em_class_ratio``: EM estimate of the unannotated voxels' class mixture per expert and the
  complementary "not c" loss of its spatial prior (ZScribbleSeg);
- ``shape_prior``: cross-entropy towards the prediction's largest connected component per class.
"""

from experts.losses.attentive import AttentiveSimilarity
from experts.losses.class_ratio import EMClassRatio
from experts.losses.crf import MaskedCRF
from experts.losses.partial import PartialDiceCE, PartialDiceCELoss, partial_cross_entropy, partial_soft_dice
from experts.losses.shape_prior import ShapePrior
from experts.losses.terms import LOSS_TERMS, LossTerm, TermContext, TermError, TermSpec, TrainingLoss, build_loss, register_term

__all__ = [
    "LOSS_TERMS",
    "LossTerm",
    "TermContext",
    "TermError",
    "TermSpec",
    "TrainingLoss",
    "build_loss",
    "register_term",
    "PartialDiceCE",
    "PartialDiceCELoss",
    "partial_cross_entropy",
    "partial_soft_dice",
    "AttentiveSimilarity",
    "EMClassRatio",
    "MaskedCRF",
    "ShapePrior",
]
