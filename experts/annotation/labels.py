"""The masks a doctor corrected, one per class, composed into one label file of the dataset spec.

A case's masks come from one interactive session per class (probabilities on the model grid). A
voxel takes the foreground class whose probability is highest among those above 0.5, background
where none is. Two kinds of file (DATASET_SPEC rule 2):

- ``dense``: the doctor accepted the whole mask: every voxel is labelled.
- ``partial``: only what the doctor looked at closely is trusted: the crops their interactions
  re-answered (each interaction's region on the model grid, which the page showed them) keep their
  label, every other voxel holds the ignore value. A case without interactions has nothing to
  trust and is refused, as is a dataset without an ignore label.

Shapes: probabilities ``[D, H, W]`` on the model grid; the label ``[X, Y, Z]`` on the input grid.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from experts.errors import ConfigError

__all__ = ["MODES", "compose_label"]

MODES = ("dense", "partial")


def compose_label(probs: Mapping[int, np.ndarray], *, to_input, mode: str = "dense", regions: Sequence[tuple[slice, ...]] = (), ignore_label: int | None = None) -> np.ndarray:
    """One label ``uint8 [X, Y, Z]`` from ``{class index: probability [D, H, W]}``.

    Args:
        probs: the sessions' probabilities on the model grid, by class index (1..K-1).
        to_input: ``f(array [D, H, W] float) -> [X, Y, Z] float`` (the session's resampling back).
        mode: ``"dense"`` or ``"partial"`` (see the module docstring).
        regions: the interactions' crops on the model grid (``partial``).
        ignore_label: the dataset's ignore value (``partial`` needs one).

    Raises:
        ConfigError: an unknown mode; ``partial`` without an ignore label or without interactions.
    """
    if mode not in MODES:
        raise ConfigError(f"save mode must be 'dense' or 'partial', got {mode!r}")
    if not probs:
        raise ConfigError("no mask to save; load the case and pick a structure first")
    classes = sorted(probs)
    stack = np.stack([to_input(probs[c].astype(np.float32)) for c in classes])
    best = stack.argmax(0)
    label = np.where(stack.max(0) > 0.5, np.asarray(classes)[best], 0).astype(np.uint8)
    if mode == "dense":
        return label
    if ignore_label is None:
        raise ConfigError("this dataset has no 'ignore' label, so a partial label cannot be stored; save it dense, or add an ignore label to dataset.json")
    if not regions:
        raise ConfigError("nothing was corrected on this case, so a partial label would annotate no voxel; correct the mask first, or save it dense")
    shape = next(iter(probs.values())).shape
    trusted = np.zeros(shape, np.float32)
    for region in regions:
        trusted[tuple(region)] = 1.0
    keep = to_input(trusted) > 0.5
    return np.where(keep, label, ignore_label).astype(np.uint8)
