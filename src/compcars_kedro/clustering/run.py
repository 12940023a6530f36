"""The whole reducer x clusterer grid on one evaluated split: :func:`run_grid`.

Each reduction and each (reducer, clusterer) selection (:func:`~.selection.select_and_cluster`)
is one task on a :class:`~.parallel.TaskPool`; the metrics table has one row per method
(:data:`METRICS_COLUMNS`), the assignment table one row per (point, method)
(:data:`ASSIGNMENT_COLUMNS`). A method that fails is one error row (``errors="record"``).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from compcars_kedro.names import ORACLE, REFERENCE, SELECTION_MODES, TRANSFER, SelectionMode

from .clusterers import Grid, default_grid, get_clusterer
from .metrics import METRIC_KEYS, cluster_metrics
from .parallel import TaskPool
from .reducers import DEFAULT_MAX_DENSITY_DIMS, check_clustering_reducer, density_input, reduce
from .scoring import DEFAULT_SAMPLE_SIZE
from .selection import select_and_cluster
from .sizes import size_scale as estimate_size_scale

logger = logging.getLogger(__name__)


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
        X_select=X_select if mode == TRANSFER else None,
        y_select=y_select if mode == TRANSFER else None,
        seed=seed,
        y_eval_for_oracle=y_eval if mode == ORACLE else None,
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
        "selection_mode": REFERENCE if spec.uses_true_k else res.selection_mode,
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
        "selection_mode": REFERENCE if spec.uses_true_k else mode,
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
    if mode == TRANSFER and (X_select is None or y_select is None):
        raise ValueError("transfer mode needs X_select and y_select")
    for r in reducers:
        check_clustering_reducer(r, allow_tsne_input)
    for c in clusterers:
        get_clusterer(c)
    grids = grids or {}
    reducer_params = reducer_params or {}
    k_true = len(np.unique(y_eval))
    roles = ("eval", "sel") if mode == TRANSFER else ("eval",)
    inputs = {"eval": X_eval, "sel": X_select}
    y_sel = np.asarray(y_select) if mode == TRANSFER else None
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
    if mode == TRANSFER and transfer_sizes == "relative" and any(
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
