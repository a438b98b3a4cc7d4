"""Consensus baselines over raters' dense label volumes: majority vote and STAPLE (SimpleITK).

* :func:`majority_vote`: ``sitk.LabelVoting`` with an explicit ``tie_label`` (not a class).
* :func:`staple`: per-class binary STAPLE probabilities, an argmax label and each rater's
  sensitivity/specificity (annotator profile).
* :func:`multi_label_staple`: ``sitk.MultiLabelSTAPLEImageFilter`` joint estimate.

Inputs are numpy ``[X, Y, Z]`` volumes (or ``[M, X, Y, Z]`` stacks); outputs keep the input's axis
order. Partial raters (containing ``ignore_label``) are refused.
"""

from experts.consensus.staple import StapleResult, multi_label_staple, staple
from experts.consensus.voting import check_raters, majority_vote, to_sitk_labels

__all__ = ["majority_vote", "check_raters", "to_sitk_labels", "StapleResult", "staple", "multi_label_staple"]
