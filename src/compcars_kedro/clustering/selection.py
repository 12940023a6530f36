"""Parameter selection that never reads the labels of the split being reported.

Modes of :func:`select_and_cluster`
-----------------------------------
``internal``
    Fit every grid point on ``X_eval`` and keep the one maximising a label-free score::

        s     = silhouette(non-noise points of a fixed seeded subsample of <= 5000 rows)
        nf    = noise fraction over ALL rows
        score = s * (1 - nf)   if s >= 0
                s * (1 + nf)   if s <  0      (noise never improves a score)

    Degenerate solutions (fewer than 2 non-noise clusters, all noise, or a silhouette that
    is undefined on the subsample) are excluded. Ties keep the earlier grid point. The
    silhouette uses ``internal_metric`` (euclidean by default; inputs come from L2-normalised
    embeddings, see :mod:`.reducers`) on the clustering input itself.
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
is rejected unless ``mode="oracle"``, and :func:`run_grid` only passes it in oracle mode.
A grid with a single point (e.g. kmeans with the true k) is fitted directly, without scoring.

KMeans with the true k is not a selection mode at all: :func:`run_grid` labels its rows
``selection_mode="reference"`` (and ``uses_true_k=True``), whatever ``mode`` it was called with.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from sklearn.metrics import pairwise_distances, silhouette_score
from tqdm.auto import tqdm

from .clusterers import (
    Grid,
    GridFit,
    Params,
    default_grid,
    expand_grid,
    fit_grid,
    get_clusterer,
)
from .metrics import METRIC_KEYS, NOISE_LABEL, cluster_metrics, label_score
from .parallel import TaskPool
from .reducers import (
    DEFAULT_MAX_DENSITY_DIMS,
    check_clustering_reducer,
    density_input,
    reduce,
)
from .sizes import scale_sizes
from .sizes import size_scale as estimate_size_scale

logger = logging.getLogger(__name__)

SelectionMode = Literal["internal", "transfer", "oracle"]
SELECTION_MODES: tuple[str, ...] = ("internal", "transfer", "oracle")
DEFAULT_SAMPLE_SIZE = 5000


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
    if mode != "oracle" and y_eval_for_oracle is not None:
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
    elif mode == "internal":
        final, chosen, score, scores = _select_internal(
            X_eval, clusterer, points, seed, internal_metric, sample_size
        )
    elif mode == "transfer":
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


def _to_json(obj: dict[str, Any]) -> str:
    def conv(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        raise TypeError(f"not JSON serialisable: {v!r}")

    return json.dumps(obj, sort_keys=True, default=conv)


METRICS_COLUMNS: tuple[str, ...] = (
    "reducer",
    "clusterer",
    "selection_mode",
    "uses_true_k",
    "params",
    "resolved_params",
    "selection_score",
    "n_grid_points",
    "input_dim",
    "runtime_s",
    "reduce_runtime_s",
    *METRIC_KEYS,
)
ASSIGNMENT_COLUMNS: tuple[str, ...] = ("row", "reducer", "clusterer", "cluster")


REFERENCE_MODE = "reference"
#: a rough cost order (most expensive first): submitted first so the pool stays busy
_COST_ORDER = ("agglomerative", "hdbscan", "optics", "dbscan", "kmeans")


def _reduce_task(
    X: np.ndarray,
    reducer: str,
    params: dict[str, Any] | None,
    seed: int,
    allow_tsne_input: bool,
    max_density_dims: int | None,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """One reduction (and its density input when ``max_density_dims`` is given)."""
    t0 = time.perf_counter()
    Z = reduce(X, reducer, params, seed, allow_tsne_input=allow_tsne_input)
    low = density_input(Z, seed, max_density_dims) if max_density_dims is not None else None
    return Z, low, time.perf_counter() - t0


def _method_task(
    reducer: str,
    clusterer: str,
    X_eval: np.ndarray,
    X_select: np.ndarray | None,
    y_select: np.ndarray | None,
    y_eval: np.ndarray,
    mode: SelectionMode,
    grid: Grid,
    seed: int,
    internal_metric: str,
    sample_size: int,
    transfer_metric: str,
    size_scale: float,
) -> tuple[dict[str, Any], np.ndarray]:
    """Select + cluster one (reducer, clusterer) and score it: (metrics row, labels)."""
    spec = get_clusterer(clusterer)
    res = select_and_cluster(
        X_eval,
        clusterer,
        grid,
        mode,
        X_select=X_select if mode == "transfer" else None,
        y_select=y_select if mode == "transfer" else None,
        seed=seed,
        y_eval_for_oracle=y_eval if mode == "oracle" else None,
        internal_metric=internal_metric,
        sample_size=sample_size,
        transfer_metric=transfer_metric,
        size_scale=size_scale,
    )
    # --- labels of the evaluated split are read only from here on ---
    mets = cluster_metrics(
        y_eval,
        res.labels,
        X_eval,
        silhouette_metric=internal_metric,
        silhouette_sample_size=sample_size,
        seed=seed,
    )
    row = {
        "reducer": reducer,
        "clusterer": clusterer,
        # true k comes from the evaluated split's labels: a labelled reference, not a mode
        "selection_mode": REFERENCE_MODE if spec.uses_true_k else res.selection_mode,
        "uses_true_k": spec.uses_true_k,
        "params": _to_json(res.params),
        "resolved_params": _to_json(res.resolved_params),
        "selection_score": res.selection_score,
        "n_grid_points": res.n_grid_points,
        "input_dim": int(X_eval.shape[1]),
        "runtime_s": res.runtime_s,
        **mets,
    }
    return row, res.labels.astype(np.int64)


def _error_row(reducer: str, clusterer: str, mode: str, exc: BaseException) -> dict[str, Any]:
    spec = get_clusterer(clusterer)
    return {
        "reducer": reducer,
        "clusterer": clusterer,
        "selection_mode": REFERENCE_MODE if spec.uses_true_k else mode,
        "uses_true_k": spec.uses_true_k,
        "error": f"{type(exc).__name__}: {exc}",
    }


def run_grid(
    X_eval: np.ndarray,
    y_eval: np.ndarray,
    reducers: list[str],
    clusterers: list[str],
    mode: SelectionMode,
    *,
    X_select: np.ndarray | None = None,
    y_select: np.ndarray | None = None,
    seed: int = 0,
    reducer_params: dict[str, dict[str, Any]] | None = None,
    grids: dict[str, Grid] | None = None,
    allow_tsne_input: bool = False,
    max_density_dims: int = DEFAULT_MAX_DENSITY_DIMS,
    internal_metric: str = "euclidean",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    transfer_metric: str = "ami",
    transfer_sizes: Literal["relative", "absolute"] = "relative",
    n_jobs: int | None = None,
    errors: Literal["raise", "record"] = "raise",
    reduction_cache: dict[tuple, Any] | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every reducer x clusterer on ``X_eval``; returns (metrics table, assignment table).

    ``y_eval`` is used ONLY after selection, to compute metrics, and to give kmeans its
    ``n_clusters`` (true k; rows flagged ``uses_true_k`` and labelled selection
    ``reference``); it reaches the selection only in oracle mode. Reducers are fitted on each
    split separately (unsupervised); clusterers with ``needs_low_dim`` get
    :func:`~.reducers.density_input` (PCA to ``max_density_dims``).

    Parallelism: each reduction and each (reducer, clusterer) selection is one task on a
    :class:`~.parallel.TaskPool` of ``n_jobs`` processes (``None``/-1: every core); a
    clusterer starts as soon as its reduction is done. Rows come back in the sequential
    ``reducers x clusterers`` order and are identical for any ``n_jobs``.

    ``transfer_sizes="relative"`` (transfer mode): size parameters chosen on the selection
    split are re-scaled to the evaluated split's label-free typical class size (:mod:`.sizes`).

    ``errors="record"``: a method that fails (e.g. fewer points than ``min_samples``) becomes
    a row with its ``error`` (and no assignments) while every other method still runs, each
    exactly once; ``"raise"`` re-raises the first failure in table order.

    ``reduction_cache``: a dict shared by several calls (e.g. the internal and transfer runs
    of one split) so an identical reduction (same array content, reducer, parameters, seed)
    is computed once.
    """
    if mode not in SELECTION_MODES:
        raise ValueError(f"mode must be one of {SELECTION_MODES}, got {mode!r}")
    if errors not in ("raise", "record"):
        raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}")
    if transfer_sizes not in ("relative", "absolute"):
        raise ValueError(f"transfer_sizes must be 'relative' or 'absolute', got {transfer_sizes!r}")
    y_eval = np.asarray(y_eval)
    if len(y_eval) != len(X_eval):
        raise ValueError("X_eval and y_eval lengths differ")
    if mode == "transfer" and (X_select is None or y_select is None):
        raise ValueError("transfer mode needs X_select and y_select")
    for r in reducers:
        check_clustering_reducer(r, allow_tsne_input)
    for c in clusterers:
        get_clusterer(c)
    grids = grids or {}
    reducer_params = reducer_params or {}
    k_true = len(np.unique(y_eval))
    roles = ("eval", "sel") if mode == "transfer" else ("eval",)
    inputs = {"eval": X_eval, "sel": X_select}
    y_sel = np.asarray(y_select) if mode == "transfer" else None
    low_dims = max_density_dims if any(get_clusterer(c).needs_low_dim for c in clusterers) else None

    pool = TaskPool(n_jobs)
    reductions: dict[tuple[str, str], Future] = {}
    cache_keys: dict[tuple[str, str], tuple] = {}
    for r in reducers:
        for role in roles:
            args = (inputs[role], r, reducer_params.get(r), seed, allow_tsne_input, low_dims)
            if reduction_cache is not None:
                key = (joblib.hash(np.asarray(inputs[role])), r,
                       _to_json(reducer_params.get(r) or {}), seed, allow_tsne_input, low_dims)
                cache_keys[(r, role)] = key
                if key in reduction_cache:
                    reductions[(r, role)] = Future()
                    reductions[(r, role)].set_result(reduction_cache[key])
                    continue
            reductions[(r, role)] = pool.submit(_reduce_task, *args)
    scale = 1.0
    if mode == "transfer" and transfer_sizes == "relative" and any(
        get_clusterer(c).size_params for c in clusterers
    ):
        scale = estimate_size_scale(X_eval, X_select, y_sel, seed=seed)

    reduced: dict[str, dict[str, Any]] = {}
    reduce_errors: dict[str, BaseException] = {}
    methods: dict[tuple[str, str], Future] = {}
    waiting = set(reductions.values())
    while waiting:
        done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
        for r in reducers:
            if r in reduced or r in reduce_errors:
                continue
            futs = [reductions[(r, role)] for role in roles]
            if not all(f.done() for f in futs):
                continue
            failed = next((f.exception() for f in futs if f.exception() is not None), None)
            if failed is not None:
                reduce_errors[r] = failed
                continue
            out = {role: f.result() for role, f in zip(roles, futs, strict=True)}
            if reduction_cache is not None:
                for role in roles:
                    reduction_cache[cache_keys[(r, role)]] = out[role]
            reduced[r] = {"seconds": sum(o[2] for o in out.values()), **out}
            for c in sorted(clusterers, key=lambda c: _COST_ORDER.index(c)
                            if c in _COST_ORDER else -1):
                spec = get_clusterer(c)
                pick = 1 if spec.needs_low_dim else 0
                Xe = out["eval"][pick]
                Xs = out["sel"][pick] if "sel" in out else None
                grid = default_grid(c, grids.get(c))
                if spec.uses_true_k:
                    grid["n_clusters"] = [k_true]
                methods[(r, c)] = pool.submit(
                    _method_task, r, c, Xe, Xs, y_sel, y_eval, mode, grid, seed,
                    internal_metric, sample_size, transfer_metric, scale,
                )

    bar = tqdm(total=len(reducers) * len(clusterers), desc="clustering", disable=not progress)
    bar.update(len(reduce_errors) * len(clusterers))
    for _ in as_completed(methods.values()):
        bar.update(1)
    bar.close()

    rows: list[dict[str, Any]] = []
    assignments: list[pd.DataFrame] = []
    for r in reducers:
        for c in clusterers:
            exc = reduce_errors.get(r)
            fut = methods.get((r, c))
            if exc is None and fut is not None:
                exc = fut.exception()
            if exc is not None:
                if errors == "raise":
                    raise exc
                logger.warning("%s/%s (%s) failed: %s", r, c, mode, exc)
                rows.append(_error_row(r, c, mode, exc))
                continue
            row, labels = fut.result()
            row["reduce_runtime_s"] = reduced[r]["seconds"]
            if errors == "record":
                row["error"] = None
            rows.append(row)
            assignments.append(
                pd.DataFrame(
                    {
                        "row": np.arange(len(labels), dtype=np.int64),
                        "reducer": r,
                        "clusterer": c,
                        "cluster": labels,
                    }
                )
            )
            logger.info(
                "%s/%s [%s]: ari=%.3f ami=%.3f noise=%.3f k=%d in %.1fs",
                r,
                c,
                row["selection_mode"],
                row["ari"],
                row["ami"],
                row["noise_fraction"],
                row["n_clusters"],
                row["runtime_s"],
            )
    columns = [*METRICS_COLUMNS, "error"] if errors == "record" else list(METRICS_COLUMNS)
    metrics_df = pd.DataFrame(rows, columns=columns)
    assign_df = (
        pd.concat(assignments, ignore_index=True)
        if assignments
        else pd.DataFrame(columns=list(ASSIGNMENT_COLUMNS))
    )
    return metrics_df, assign_df
