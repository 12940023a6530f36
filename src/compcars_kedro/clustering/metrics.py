"""Cluster-quality metrics against true labels (external) and without them (silhouette).

Conventions
-----------
* ``-1`` in ``y_pred`` means *noise* (DBSCAN / HDBSCAN / OPTICS).
* Headline metrics (``ari``, ``ami``, ``nmi``) are computed over **all** points, with every
  noise point turned into its own singleton cluster (:func:`noise_as_singletons`). Declaring
  a point noise therefore never improves a score for free.
* ``*_nonnoise`` variants use only the points the clusterer did not call noise; read them
  together with ``noise_fraction``.
* ``purity`` = sum over non-noise clusters of the majority-label count, divided by the total
  number of points N (noise included). Noise points therefore count as WRONG.
* ``pct_pure_clusters`` / ``pct_dominant_clusters`` are WEIGHTED BY CLUSTER SIZE: the
  percentage (0-100) of ALL N points (noise included, like ``purity``) that lie in a cluster
  of at least 2 points whose majority-label share is 1.0 / >= ``dominant_threshold``
  (default 0.8). Singletons never count as pure (an all-singletons answer scores 0, not 100),
  and noise points never count either.
* ``silhouette`` is computed on the non-noise points of ``X`` (euclidean by default, on at most
  ``silhouette_sample_size`` points drawn with a fixed seed); NaN with fewer than 2 clusters.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from sklearn.metrics.cluster import contingency_matrix

logger = logging.getLogger(__name__)

NOISE_LABEL = -1

METRIC_KEYS: tuple[str, ...] = (
    "ari",
    "ami",
    "nmi",
    "ari_nonnoise",
    "ami_nonnoise",
    "nmi_nonnoise",
    "purity",
    "pct_pure_clusters",
    "pct_dominant_clusters",
    "silhouette",
    "n_clusters",
    "noise_fraction",
    "n_points",
    "n_true_classes",
)


def noise_as_singletons(labels: np.ndarray) -> np.ndarray:
    """Return a copy of integer ``labels`` where each noise point (-1) gets its own new label."""
    labels = np.asarray(labels).astype(np.int64, copy=True)
    noise = labels == NOISE_LABEL
    n_noise = int(noise.sum())
    if n_noise:
        start = int(labels.max(initial=NOISE_LABEL)) + 1
        labels[noise] = np.arange(start, start + n_noise)
    return labels


def n_clusters_of(labels: np.ndarray) -> int:
    """Number of clusters, excluding noise."""
    uniq = np.unique(np.asarray(labels))
    return int((uniq != NOISE_LABEL).sum())


def label_score(y_true: np.ndarray, y_pred: np.ndarray, metric: str = "ami") -> float:
    """External score with noise as singletons (used by transfer/oracle parameter selection)."""
    fn = _EXTERNAL[metric]
    return float(fn(np.asarray(y_true), noise_as_singletons(y_pred)))


def _ami(a: np.ndarray, b: np.ndarray) -> float:
    return float(adjusted_mutual_info_score(a, b))


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    return float(adjusted_rand_score(a, b))


def _nmi(a: np.ndarray, b: np.ndarray) -> float:
    return float(normalized_mutual_info_score(a, b))


_EXTERNAL = {"ari": _ari, "ami": _ami, "nmi": _nmi}


def silhouette_nonnoise(
    X: np.ndarray,
    y_pred: np.ndarray,
    *,
    metric: str = "euclidean",
    sample_size: int | None = 5000,
    seed: int = 0,
) -> float:
    """Silhouette on the non-noise points; NaN when fewer than 2 clusters (or too few points)."""
    y_pred = np.asarray(y_pred)
    keep = y_pred != NOISE_LABEL
    Xk, yk = np.asarray(X)[keep], y_pred[keep]
    n_lab = len(np.unique(yk))
    if n_lab < 2 or n_lab >= len(yk):
        return math.nan
    if sample_size is not None and len(yk) > sample_size:
        idx = np.random.default_rng(seed).choice(len(yk), size=sample_size, replace=False)
        Xk, yk = Xk[idx], yk[idx]
        n_lab = len(np.unique(yk))
        if n_lab < 2 or n_lab >= len(yk):
            return math.nan
    return float(silhouette_score(Xk, yk, metric=metric))


def cluster_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    X: np.ndarray | None = None,
    *,
    dominant_threshold: float = 0.8,
    silhouette_metric: str = "euclidean",
    silhouette_sample_size: int | None = 5000,
    seed: int = 0,
) -> dict[str, float]:
    """All cluster metrics over ALL points (see module docstring for definitions).

    ``y_true`` may hold any hashable labels (ints or strings); ``y_pred`` integer cluster ids
    with -1 for noise. ``X`` (the clustering input) is only needed for ``silhouette``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred).astype(np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D")
    n = len(y_true)
    if n == 0:
        raise ValueError("cannot compute metrics on zero points")

    singles = noise_as_singletons(y_pred)
    out: dict[str, float] = {
        "ari": _ari(y_true, singles),
        "ami": _ami(y_true, singles),
        "nmi": _nmi(y_true, singles),
    }

    keep = y_pred != NOISE_LABEL
    n_keep = int(keep.sum())
    if n_keep:
        yt, yp = y_true[keep], y_pred[keep]
        out["ari_nonnoise"] = _ari(yt, yp)
        out["ami_nonnoise"] = _ami(yt, yp)
        out["nmi_nonnoise"] = _nmi(yt, yp)
        # rows: true classes, columns: predicted clusters
        cont = contingency_matrix(yt, yp, sparse=True).tocsc()
        col_max = np.asarray(cont.max(axis=0).todense()).ravel()
        col_sum = np.asarray(cont.sum(axis=0)).ravel()
        share = col_max / col_sum
        big = col_sum >= 2  # singletons are trivially pure: never counted
        out["purity"] = float(col_max.sum() / n)
        out["pct_pure_clusters"] = float(100.0 * col_sum[big & (share >= 1.0)].sum() / n)
        out["pct_dominant_clusters"] = float(
            100.0 * col_sum[big & (share >= dominant_threshold)].sum() / n
        )
    else:
        for key in ("ari_nonnoise", "ami_nonnoise", "nmi_nonnoise"):
            out[key] = math.nan
        out["purity"] = 0.0
        out["pct_pure_clusters"] = 0.0
        out["pct_dominant_clusters"] = 0.0

    out["silhouette"] = (
        silhouette_nonnoise(
            X, y_pred, metric=silhouette_metric, sample_size=silhouette_sample_size, seed=seed
        )
        if X is not None
        else math.nan
    )
    out["n_clusters"] = n_clusters_of(y_pred)
    out["noise_fraction"] = float(1.0 - n_keep / n)
    out["n_points"] = n
    out["n_true_classes"] = len(np.unique(y_true))
    return out
