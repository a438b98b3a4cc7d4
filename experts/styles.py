"""Experts' labelling styles as points: their CIN rows, side by side.

An expert's style lives in its scale/shift rows; concatenating them over every CIN layer gives one
vector per expert, and PCA (scikit-learn) places similar styles near each other in 2D.
"""

from __future__ import annotations

import numpy as np

__all__ = ["style_vectors", "style_map"]


def style_vectors(network) -> np.ndarray:
    """``[E, D]``: every CIN layer's gamma and beta rows of each expert, concatenated."""
    parts = []
    for gamma, beta in network.row_tables().values():
        parts += [gamma.cpu().numpy(), beta.cpu().numpy()]
    if not parts:
        raise ValueError("the network has no conditional norm layer: nothing to map")
    return np.concatenate(parts, axis=1)


def style_map(vectors: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """2D PCA coordinates ``[E, 2]`` of the style vectors and the explained variance ratios.

    With fewer than 3 experts the second coordinate is 0 (PCA has at most E - 1 components).
    """
    from sklearn.decomposition import PCA

    n = vectors.shape[0]
    if n < 2:
        return np.zeros((n, 2)), [0.0, 0.0]
    k = min(2, n - 1)
    pca = PCA(n_components=k)
    coords = pca.fit_transform(vectors - vectors.mean(0))
    if k == 1:
        coords = np.concatenate([coords, np.zeros((n, 1))], axis=1)
    ratios = list(pca.explained_variance_ratio_) + [0.0] * (2 - k)
    return coords, [float(r) for r in ratios]
