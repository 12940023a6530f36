"""Size parameters that travel between splits relative to the class size, not as counts.

Why
---
In transfer mode the clustering parameters are chosen on the labelled *val* split and frozen.
Val holds few images per class, the reported splits (``test``: the same seen models, other
images; ``unseen``: whole held-out models) hold more. A ``min_cluster_size`` of 3 chosen on
val's classes of 3 would cut unseen classes of 30 into pieces. So every parameter that is a
number of points (``ClustererSpec.size_params``: HDBSCAN ``min_cluster_size``/``min_samples``,
DBSCAN/OPTICS ``min_samples``, agglomerative ``mean_cluster_size``) travels as a FRACTION of the
typical class size and is re-scaled on the evaluated split.

The rule (label-free on the evaluated split)
-------------------------------------------
1. A radius ``r`` is calibrated on the selection split *with its labels* (allowed: it is the
   selection split): the median, over a seeded subsample of its points, of the median
   distance from a point to the other points of its own class (L2-normalised embeddings,
   euclidean = monotone in cosine).
2. The typical class size of a split ``S`` is estimated without labels as
   ``m(S) = 1 + mean over a seeded subsample of S of #{other points of S within r}``
   (a class with twice the images and the same spread has twice the neighbours within r).
3. ``size_scale = m(eval) / m(select)``; each size parameter becomes
   ``max(floor, round(value * size_scale))`` on the evaluated split (floors: 2 for
   ``min_cluster_size``, 1 otherwise). The chosen (val) value and the applied one are both
   recorded (``params`` / ``resolved_params.eval_params``).

The evaluated split's labels are never read: only its embeddings. ``transfer_sizes:
absolute`` (parameter) restores the old behaviour (scale 1).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from sklearn.preprocessing import normalize

logger = logging.getLogger(__name__)

SIZE_FLOORS: dict[str, int] = {"min_cluster_size": 2}
DEFAULT_QUERY_SAMPLE = 500
_CHUNK = 256


def _queries(n: int, sample: int, seed: int) -> np.ndarray:
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def _distances(Xq: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Euclidean distances between L2-normalised rows (float32, clipped at 0)."""
    d2 = 2.0 - 2.0 * (Xq @ X.T)
    return np.sqrt(np.clip(d2, 0.0, None))


def class_radius(X_select: np.ndarray, y_select: np.ndarray, *, sample: int, seed: int) -> float:
    """Median within-class distance on the (labelled) selection split; NaN if no class has 2+."""
    X = normalize(np.asarray(X_select, dtype=np.float32))
    y = np.asarray(y_select)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(counts[inverse] >= 2)
    if len(eligible) == 0:
        return math.nan
    q = eligible[_queries(len(eligible), sample, seed)]
    meds = []
    for start in range(0, len(q), _CHUNK):
        rows = q[start:start + _CHUNK]
        d = _distances(X[rows], X)
        for i, row in enumerate(rows):
            same = y == y[row]
            same[row] = False
            meds.append(float(np.median(d[i, same])))
    return float(np.median(meds))


def typical_class_size(X: np.ndarray, radius: float, *, sample: int, seed: int) -> float:
    """Label-free class-size estimate: 1 + mean number of other points within ``radius``."""
    X = normalize(np.asarray(X, dtype=np.float32))
    q = _queries(len(X), sample, seed)
    total = 0
    for start in range(0, len(q), _CHUNK):
        rows = q[start:start + _CHUNK]
        total += int((_distances(X[rows], X) <= radius).sum()) - len(rows)  # minus self
    return 1.0 + total / len(q)


def size_scale(
    X_eval: np.ndarray,
    X_select: np.ndarray,
    y_select: np.ndarray,
    *,
    sample: int = DEFAULT_QUERY_SAMPLE,
    seed: int = 0,
) -> float:
    """``m(eval) / m(select)`` (module docstring); 1.0 when it cannot be estimated."""
    r = class_radius(X_select, y_select, sample=sample, seed=seed)
    if not np.isfinite(r) or r <= 0:
        logger.warning("size scale: no class with 2+ points on the selection split; scale 1")
        return 1.0
    m_sel = typical_class_size(X_select, r, sample=sample, seed=seed)
    m_eval = typical_class_size(X_eval, r, sample=sample, seed=seed)
    scale = m_eval / m_sel
    logger.info("size scale %.3f: typical class size %.2f (eval) vs %.2f (select), radius %.4f",
                scale, m_eval, m_sel, r)
    return float(scale)


def scale_sizes(params: dict[str, Any], names: tuple[str, ...], scale: float) -> dict[str, Any]:
    """``params`` with every size parameter in ``names`` multiplied by ``scale``.

    Integers stay integers (rounded, at least their floor); ``None`` and fractions in (0, 1)
    (already relative, e.g. OPTICS ``min_cluster_size=0.05``) are left alone.
    """
    out = dict(params)
    for name in names:
        value = out.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value < 1:
            continue
        floor = SIZE_FLOORS.get(name, 1)
        scaled = value * scale
        out[name] = max(floor, round(scaled)) if isinstance(value, int) else max(1.0, scaled)
    return out
