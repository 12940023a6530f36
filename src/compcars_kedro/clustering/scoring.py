"""The label-free score of the ``internal`` selection mode (:mod:`.selection`).

::

    s     = silhouette(non-noise points of a fixed seeded subsample of <= 5000 rows)
    nf    = noise fraction over ALL rows
    score = s * (1 - nf)   if s >= 0
            s * (1 + nf)   if s <  0      (noise never improves a score)

Degenerate solutions (fewer than 2 non-noise clusters, all noise, or a silhouette that is
undefined on the subsample) score NaN. The subsample depends on the number of rows and the
seed only, so every grid point of one fit shares it (and its pairwise distances,
:func:`sample_distances`).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import pairwise_distances, silhouette_score

from .metrics import NOISE_LABEL

DEFAULT_SAMPLE_SIZE = 5000


def _sample_rows(n: int, sample_size: int, seed: int) -> np.ndarray | None:
    """The fixed subsample of the internal score (depends on n and seed only)."""
    if n <= sample_size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))


def internal_score(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    metric: str = "euclidean",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    distances: np.ndarray | None = None,
) -> float:
    """Label-free selection score (module docstring); NaN for degenerate solutions.

    ``distances``: the pairwise distances of the subsampled rows, computed once and shared
    by every grid point (:func:`sample_distances`); the score is the same.
    """
    labels = np.asarray(labels)
    noise = labels == NOISE_LABEL
    nf = float(noise.mean())
    if nf >= 1.0 or len(np.unique(labels[~noise])) < 2:
        return math.nan
    idx = _sample_rows(len(labels), sample_size, seed)
    ls = labels if idx is None else labels[idx]
    keep = ls != NOISE_LABEL
    n_lab = len(np.unique(ls[keep]))
    if n_lab < 2 or n_lab >= int(keep.sum()):
        return math.nan
    if distances is not None:
        s = float(silhouette_score(distances[np.ix_(keep, keep)], ls[keep], metric="precomputed"))
    else:
        Xs = X if idx is None else X[idx]
        s = float(silhouette_score(Xs[keep], ls[keep], metric=metric))
    return s * (1.0 - nf) if s >= 0 else s * (1.0 + nf)


def sample_distances(
    X: np.ndarray, *, metric: str = "euclidean", sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> np.ndarray:
    """Pairwise distances of the internal score's subsampled rows (shared by grid points)."""
    idx = _sample_rows(len(X), sample_size, seed)
    return pairwise_distances(X if idx is None else X[idx], metric=metric)

