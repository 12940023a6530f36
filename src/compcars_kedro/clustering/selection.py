"""Parameter selection that never reads the labels of the split being reported.

Modes of :func:`select_and_cluster` (``names.SELECTION_MODES``)
--------------------------------------------------------------
``internal``
    Fit every grid point on ``X_eval`` and keep the one maximising the label-free
    :func:`~.scoring.internal_score` (silhouette of a fixed seeded subsample, penalised by
    the noise fraction; see :mod:`.scoring`). Degenerate solutions (fewer than 2 non-noise
    clusters, all noise, or a silhouette that is undefined on the subsample) are excluded.
    Ties keep the earlier grid point. The silhouette uses ``internal_metric`` (euclidean by
    default; inputs come from L2-normalised embeddings, see :mod:`.reducers`) on the
    clustering input itself.
``transfer``
    Fit every grid point on a separate labelled selection split ``X_select`` (e.g. the seen
    val split) and keep the one maximising ``transfer_metric`` (AMI, noise points as
    singletons) against ``y_select``. The chosen parameters are FROZEN and applied once to
    ``X_eval``. Scale-free parameters transfer as such: DBSCAN's ``eps_quantile`` (eps
    re-derived from the evaluated split's kNN distances) and agglomerative's
    ``mean_cluster_size`` (n_clusters = round(n_eval / mean_cluster_size)).
``oracle``
    Reference only: like transfer but scored on the evaluated split's own labels
    (``y_eval_for_oracle``). Every result says ``selection_mode="oracle"``.

Structural guarantee: the evaluated split's labels are not a parameter of the internal and
transfer code paths (:func:`_select_internal`, :func:`_select_transfer`); ``y_eval_for_oracle``
is rejected unless ``mode="oracle"``, and :func:`~.run.run_grid` only passes it in oracle mode.
A grid with a single point (e.g. kmeans with the true k) is fitted directly, without scoring.

KMeans with the true k is not a selection mode at all: :func:`~.run.run_grid` labels its rows
``selection_mode="reference"`` (``names.REFERENCE``, and ``uses_true_k=True``), whatever
``mode`` it was called with.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from compcars_kedro.names import INTERNAL, ORACLE, SELECTION_MODES, TRANSFER, SelectionMode

from .clusterers import Grid, GridFit, Params, default_grid, expand_grid, fit_grid, get_clusterer
from .metrics import label_score
from .scoring import DEFAULT_SAMPLE_SIZE, internal_score, sample_distances
from .sizes import scale_sizes

logger = logging.getLogger(__name__)


@dataclass
class ClusterResult:
    """Outcome of :func:`select_and_cluster` on the evaluated split."""

    labels: np.ndarray
    params: Params
    selection_mode: str
    selection_score: float
    runtime_s: float
    n_grid_points: int
    resolved_params: Params = field(default_factory=dict)
    grid_scores: list[float] = field(default_factory=list)



def _argmax(scores: list[float]) -> int | None:
    """Index of the best finite score (first on ties) or None if none is finite."""
    best, best_i = -math.inf, None
    for i, s in enumerate(scores):
        if s is not None and np.isfinite(s) and s > best:
            best, best_i = s, i
    return best_i


def _pick(points: list[Params], scores: list[float], what: str) -> int:
    i = _argmax(scores)
    if i is None:
        logger.warning("%s: every grid point is degenerate; falling back to the first", what)
        return 0
    return i


def _select_internal(
    X_eval: np.ndarray, name: str, points: list[Params], seed: int, metric: str, sample_size: int
) -> tuple[GridFit, Params, float, list[float]]:
    """Internal mode: only ``X_eval`` (no labels) is visible here."""
    fits = fit_grid(X_eval, name, points, seed)
    D = sample_distances(X_eval, metric=metric, sample_size=sample_size, seed=seed)
    scores = [
        internal_score(
            X_eval, f.labels, metric=metric, sample_size=sample_size, seed=seed, distances=D
        )
        for f in fits
    ]
    i = _pick(points, scores, name)
    return fits[i], points[i], scores[i], scores


def _select_transfer(
    X_eval: np.ndarray,
    X_select: np.ndarray,
    y_select: np.ndarray,
    name: str,
    points: list[Params],
    seed: int,
    label_metric: str,
    size_scale: float = 1.0,
) -> tuple[GridFit, Params, float, list[float]]:
    """Transfer (and oracle) mode: choose on (X_select, y_select), apply frozen to X_eval.

    Size parameters of the chosen point are multiplied by ``size_scale`` before the fit on
    ``X_eval`` (see :mod:`.sizes`); the applied values are in ``resolved["eval_params"]``.
    """
    fits = fit_grid(X_select, name, points, seed)
    scores = [label_score(y_select, f.labels, label_metric) for f in fits]
    i = _pick(points, scores, name)
    chosen = points[i]
    if X_select is X_eval:
        final = fits[i]
    else:
        applied = scale_sizes(chosen, get_clusterer(name).size_params, size_scale)
        final = fit_grid(X_eval, name, [applied], seed)[0]
        if get_clusterer(name).size_params:
            names = get_clusterer(name).size_params
            final = GridFit(final.labels, {
                **final.resolved, "size_scale": float(size_scale),
                "eval_params": {k: applied[k] for k in names if k in applied}})
    return final, chosen, scores[i], scores


def select_and_cluster(
    X_eval: np.ndarray,
    clusterer: str,
    grid: Grid | None,
    mode: SelectionMode,
    *,
    X_select: np.ndarray | None = None,
    y_select: np.ndarray | None = None,
    seed: int = 0,
    y_eval_for_oracle: np.ndarray | None = None,
    internal_metric: str = "euclidean",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    transfer_metric: str = "ami",
    size_scale: float = 1.0,
) -> ClusterResult:
    """Choose parameters of ``clusterer`` from ``grid`` per ``mode`` and cluster ``X_eval``.

    ``grid=None`` uses the default grid. ``X_eval``/``X_select`` are clustering inputs
    (already reduced). Only oracle mode may receive ``y_eval_for_oracle``. ``size_scale``
    (transfer mode only) multiplies the chosen size parameters on ``X_eval`` (:mod:`.sizes`).
    """
    if mode not in SELECTION_MODES:
        raise ValueError(f"mode must be one of {SELECTION_MODES}, got {mode!r}")
    if mode != ORACLE and y_eval_for_oracle is not None:
        raise ValueError("y_eval_for_oracle is only accepted in oracle mode")
    get_clusterer(clusterer)
    points = expand_grid(grid if grid is not None else default_grid(clusterer))
    X_eval = np.asarray(X_eval)
    t0 = time.perf_counter()
    if len(points) == 1:
        final, chosen, score, scores = (
            fit_grid(X_eval, clusterer, points, seed)[0],
            points[0],
            math.nan,
            [math.nan],
        )
    elif mode == INTERNAL:
        final, chosen, score, scores = _select_internal(
            X_eval, clusterer, points, seed, internal_metric, sample_size
        )
    elif mode == TRANSFER:
        if X_select is None or y_select is None:
            raise ValueError("transfer mode needs X_select and y_select")
        if len(X_select) != len(y_select):
            raise ValueError("X_select and y_select lengths differ")
        final, chosen, score, scores = _select_transfer(
            X_eval,
            np.asarray(X_select),
            np.asarray(y_select),
            clusterer,
            points,
            seed,
            transfer_metric,
            size_scale,
        )
    else:
        if y_eval_for_oracle is None:
            raise ValueError("oracle mode needs y_eval_for_oracle")
        final, chosen, score, scores = _select_transfer(
            X_eval,
            X_eval,
            np.asarray(y_eval_for_oracle),
            clusterer,
            points,
            seed,
            transfer_metric,
        )
    runtime = time.perf_counter() - t0
    logger.info(
        "%s [%s]: chose %s (score %.4f) from %d grid points in %.1fs",
        clusterer,
        mode,
        chosen,
        score,
        len(points),
        runtime,
    )
    return ClusterResult(
        labels=final.labels,
        params=dict(chosen),
        selection_mode=mode,
        selection_score=float(score),
        runtime_s=runtime,
        n_grid_points=len(points),
        resolved_params=dict(final.resolved),
        grid_scores=[float(s) for s in scores],
    )
