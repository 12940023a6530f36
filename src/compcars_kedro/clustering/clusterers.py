"""Clusterers behind an explicit registry, each evaluated over a whole parameter grid at once.

Every clusterer is a :class:`ClustererSpec` in :data:`CLUSTERERS`. Its ``fit_grid(X, points,
seed)`` returns one :class:`GridFit` (labels + resolved parameters) per grid point and shares
the expensive part between grid points:

* ``dbscan``: one kNN query + one sparse radius graph at the largest eps; each grid point is a
  cheap DBSCAN on that precomputed graph. ``eps_quantile=q`` means ``eps`` = the q-quantile of
  the distance to the ``(min_samples-1)``-th neighbour, i.e. roughly a fraction ``q`` of the
  points are core points. It is scale-free, so in transfer mode the *quantile* is frozen and
  eps adapts to the evaluated split (an absolute ``eps`` may be given instead and is then
  transferred as is).
* ``hdbscan`` (``sklearn.cluster.HDBSCAN``): one exact fit per ``min_samples``; other
  ``min_cluster_size`` / ``cluster_selection_method`` values re-label the same single-linkage
  tree (falls back to refitting if sklearn's private helper is unavailable).
* ``agglomerative``: kNN connectivity graph (``kneighbors_graph(n_neighbors=10)``) so the
  tree build is ~O(n log n); the full tree is built once per linkage (joblib cache) and cut at
  ``n_clusters = round(n / mean_cluster_size)``. CAP: at most ``max_points`` (default 20,000)
  points are used to build the tree; above that a seeded subsample is clustered and the other
  points take the label of their nearest clustered point.
* ``optics``: one OPTICS fit per ``min_samples``; every ``xi`` is a cheap
  ``cluster_optics_xi`` extraction. CAP: OPTICS is O(n^2) with a Python loop, so at most
  ``max_points`` (default 5,000) points are fitted; the rest take the label (noise included)
  of their nearest fitted point.
* ``kmeans``: the REFERENCE. It is given ``n_clusters`` = the true number of classes of the
  evaluated split (the caller injects it) and its rows are flagged ``uses_true_k=True``.

Grids are plain dicts ``{param: [values, ...]}`` (single-value lists are fixed settings); the
defaults in :data:`DEFAULT_GRIDS` are sized for 20k x 2048 embeddings on 2 CPU cores and can
be overridden by the caller.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import Memory
from sklearn.cluster import (
    DBSCAN,
    HDBSCAN,
    OPTICS,
    AgglomerativeClustering,
    KMeans,
    cluster_optics_xi,
)
from sklearn.neighbors import NearestNeighbors, kneighbors_graph, sort_graph_by_row_values

logger = logging.getLogger(__name__)

Grid = dict[str, list[Any]]
Params = dict[str, Any]

DEFAULT_GRIDS: dict[str, Grid] = {
    "dbscan": {"eps_quantile": [0.25, 0.5, 0.75, 0.9], "min_samples": [5, 10]},
    "hdbscan": {
        "min_cluster_size": [5, 10, 20, 40],
        "min_samples": [5],
        "cluster_selection_method": ["eom", "leaf"],
    },
    "agglomerative": {
        "mean_cluster_size": [5, 8, 12, 18, 27, 40, 60, 90, 135, 200],
        "linkage": ["ward"],
        "n_neighbors": [10],
        "max_points": [20_000],
    },
    "optics": {"min_samples": [5, 10], "xi": [0.02, 0.05, 0.1], "max_points": [5_000]},
    # n_clusters (= true k of the evaluated split) is injected by the caller.
    "kmeans": {"n_init": [3]},
}


@dataclass(frozen=True)
class GridFit:
    """Labels for one grid point plus the parameters actually used (e.g. resolved eps)."""

    labels: np.ndarray
    resolved: Params = field(default_factory=dict)


FitGrid = Callable[[np.ndarray, list[Params], int], list[GridFit]]


@dataclass(frozen=True)
class ClustererSpec:
    """Registry entry: grid fitter plus metadata."""

    name: str
    fit_grid: FitGrid
    needs_low_dim: bool
    uses_true_k: bool = False
    #: parameters that are counts of points: in transfer mode they travel relative to the
    #: expected class size (see :mod:`.sizes`), never as absolute counts.
    size_params: tuple[str, ...] = ()


def expand_grid(grid: Grid) -> list[Params]:
    """Cartesian product of a grid dict, in the caller's key/value order (deterministic)."""
    if not grid:
        return [{}]
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], list | tuple) or len(grid[key]) == 0:
            raise ValueError(f"grid entry {key!r} must be a non-empty list, got {grid[key]!r}")
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _group(points: Sequence[Params], keys: Sequence[str]) -> dict[tuple, list[int]]:
    """Indices of grid points grouped by the values of ``keys`` (insertion-ordered)."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault(tuple(p.get(k) for k in keys), []).append(i)
    return groups


def _subsample(n: int, cap: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded subsample of ``cap`` indices, or None when no cap applies."""
    if cap is None or n <= cap:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=int(cap), replace=False))


def _nearest_fitted(X: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For points not in ``idx``: (their indices, position in ``idx`` of their nearest point)."""
    rest = np.setdiff1d(np.arange(len(X)), idx, assume_unique=True)
    nn = NearestNeighbors(n_neighbors=1).fit(X[idx])
    pos = nn.kneighbors(X[rest], return_distance=False)[:, 0]
    return rest, pos


def _expand(n: int, idx: np.ndarray | None, sub_labels: np.ndarray, nearest: Any) -> np.ndarray:
    """Map labels of a fitted subsample back to all ``n`` points via nearest fitted point."""
    if idx is None:
        return np.asarray(sub_labels, dtype=np.int64)
    rest, pos = nearest
    out = np.empty(n, dtype=np.int64)
    out[idx] = sub_labels
    out[rest] = np.asarray(sub_labels)[pos]
    return out


# --------------------------------------------------------------------------- dbscan
def _dbscan_grid(X: np.ndarray, points: list[Params], seed: int) -> list[GridFit]:
    n = len(X)
    k_max = max(int(p["min_samples"]) for p in points) - 1
    k_max = int(np.clip(k_max, 1, n - 1))
    nn = NearestNeighbors(n_neighbors=k_max).fit(X)
    knn_dist, _ = nn.kneighbors()  # self excluded
    eps_list = []
    for p in points:
        if p.get("eps") is not None:
            eps = float(p["eps"])
        else:
            col = int(np.clip(int(p["min_samples"]) - 2, 0, k_max - 1))
            eps = float(np.quantile(knn_dist[:, col], float(p["eps_quantile"])))
        eps_list.append(max(eps, 1e-12))
    graph = nn.radius_neighbors_graph(radius=max(eps_list), mode="distance")
    graph = sort_graph_by_row_values(graph, copy=False, warn_when_not_sorted=False)
    fits = []
    for p, eps in zip(points, eps_list, strict=True):
        labels = DBSCAN(eps=eps, min_samples=int(p["min_samples"]), metric="precomputed")
        fits.append(GridFit(labels.fit_predict(graph).astype(np.int64), {"eps": eps}))
    return fits


# -------------------------------------------------------------------------- hdbscan
def _tree_to_labels() -> Callable[..., tuple[np.ndarray, np.ndarray]] | None:
    try:  # private helper: lets one HDBSCAN tree serve several min_cluster_size values
        from sklearn.cluster._hdbscan._tree import tree_to_labels
    except ImportError:  # pragma: no cover - depends on the sklearn version
        return None
    return tree_to_labels


def _hdbscan_grid(
    X: np.ndarray, points: list[Params], seed: int, *, reuse_tree: bool = True
) -> list[GridFit]:
    relabel = _tree_to_labels() if reuse_tree else None
    fits: list[GridFit | None] = [None] * len(points)
    for _, members in _group(points, ["min_samples"]).items():
        est = None
        for i in members:
            p = points[i]
            mcs = int(p["min_cluster_size"])
            method = str(p.get("cluster_selection_method", "eom"))
            if est is None or relabel is None or not hasattr(est, "_single_linkage_tree_"):
                est = HDBSCAN(
                    min_cluster_size=mcs,
                    min_samples=p.get("min_samples"),
                    cluster_selection_method=method,
                    copy=True,
                ).fit(X)
                labels = est.labels_
            else:
                labels = relabel(est._single_linkage_tree_, mcs, method, False, 0.0, None)[0]
            fits[i] = GridFit(np.asarray(labels, dtype=np.int64))
    return [f for f in fits if f is not None]


# -------------------------------------------------------------------- agglomerative
def connect_components(conn: Any, X: np.ndarray, chunk: int = 1024) -> Any:
    """Connectivity graph ``conn`` plus the closest pair between every two of its components.

    These are the edges scikit-learn's ward/agglomerative adds itself to a disconnected kNN
    graph (``_fix_connected_components``: one ``pairwise_distances`` call per pair of
    components, most of the tree's time at 20k points), computed here in row chunks: per
    point its distance to the nearest point of each component; the closest pair of
    components ``a, b`` is then (argmin over a of that distance to b, argmin over b of that
    distance to a).
    """
    from scipy.sparse import coo_matrix, csgraph
    from sklearn.metrics import pairwise_distances

    conn = conn.tocsr()
    n_comp, comp = csgraph.connected_components(conn, directed=False)
    if n_comp == 1:
        return conn
    order = np.argsort(comp, kind="stable")
    starts = np.searchsorted(comp[order], np.arange(n_comp))
    Xo = X[order]
    near = np.empty((len(X), n_comp), dtype=np.float64)  # distance to nearest point of comp
    for start in range(0, len(X), chunk):
        d = pairwise_distances(X[start:start + chunk], Xo)
        near[start:start + chunk] = np.minimum.reduceat(d, starts, axis=1)
    best = np.empty((n_comp, n_comp), dtype=np.int64)  # best[a, b]: point of a nearest b
    for a in range(n_comp):
        rows = order[starts[a]:starts[a + 1] if a + 1 < n_comp else len(X)]
        best[a] = rows[np.argmin(near[rows], axis=0)]
    a, b = np.triu_indices(n_comp, k=1)
    i, j = best[a, b], best[b, a]
    extra = coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=conn.shape)
    return (conn + extra).tocsr()


def _agglomerative_grid(X: np.ndarray, points: list[Params], seed: int) -> list[GridFit]:
    n = len(X)
    fits: list[GridFit | None] = [None] * len(points)
    keys = ["linkage", "n_neighbors", "max_points", "metric"]
    with tempfile.TemporaryDirectory(prefix="agglo_tree_") as cache_dir:
        memory = Memory(cache_dir, verbose=0)
        for (linkage, n_neighbors, max_points, metric), members in _group(points, keys).items():
            idx = _subsample(n, max_points, seed)
            Xf = X if idx is None else X[idx]
            nearest = None if idx is None else _nearest_fitted(X, idx)
            k = int(min(n_neighbors or 10, len(Xf) - 1))
            conn = connect_components(kneighbors_graph(Xf, n_neighbors=k, include_self=False), Xf)
            for i in members:
                p = points[i]
                if p.get("n_clusters") is not None:
                    n_clusters = int(p["n_clusters"])
                else:
                    n_clusters = round(n / float(p["mean_cluster_size"]))
                n_clusters = int(np.clip(n_clusters, 2, len(Xf)))
                model = AgglomerativeClustering(
                    n_clusters=n_clusters,
                    linkage=linkage or "ward",
                    metric=metric or "euclidean",
                    connectivity=conn,
                    compute_full_tree=True,
                    memory=memory,
                )
                with warnings.catch_warnings():
                    # disconnected kNN graphs are completed by sklearn; expected here
                    warnings.filterwarnings("ignore", message=".*connected components.*")
                    sub = model.fit_predict(Xf)
                resolved = {"n_clusters": n_clusters, "n_fitted": len(Xf)}
                fits[i] = GridFit(_expand(n, idx, sub, nearest), resolved)
    return [f for f in fits if f is not None]


# --------------------------------------------------------------------------- optics
def _optics_grid(X: np.ndarray, points: list[Params], seed: int) -> list[GridFit]:
    n = len(X)
    fits: list[GridFit | None] = [None] * len(points)
    for (min_samples, max_points), members in _group(points, ["min_samples", "max_points"]).items():
        idx = _subsample(n, max_points, seed)
        Xf = X if idx is None else X[idx]
        nearest = None if idx is None else _nearest_fitted(X, idx)
        ms = int(min(int(min_samples), len(Xf)))
        est = OPTICS(min_samples=ms, xi=float(points[members[0]]["xi"])).fit(Xf)
        for i in members:
            p = points[i]
            sub, _ = cluster_optics_xi(
                reachability=est.reachability_,
                predecessor=est.predecessor_,
                ordering=est.ordering_,
                min_samples=ms,
                min_cluster_size=p.get("min_cluster_size"),
                xi=float(p["xi"]),
            )
            fits[i] = GridFit(_expand(n, idx, sub, nearest), {"n_fitted": len(Xf)})
    return [f for f in fits if f is not None]


# --------------------------------------------------------------------------- kmeans
def _kmeans_grid(X: np.ndarray, points: list[Params], seed: int) -> list[GridFit]:
    fits = []
    for p in points:
        if p.get("n_clusters") is None:
            raise ValueError("kmeans needs n_clusters (the true k) in its grid")
        k = int(min(int(p["n_clusters"]), len(X)))
        model = KMeans(n_clusters=k, n_init=int(p.get("n_init", 3)), random_state=seed)
        fits.append(GridFit(model.fit_predict(X).astype(np.int64), {"n_clusters": k}))
    return fits


CLUSTERERS: dict[str, ClustererSpec] = {
    "dbscan": ClustererSpec("dbscan", _dbscan_grid, needs_low_dim=True,
                            size_params=("min_samples",)),
    "hdbscan": ClustererSpec("hdbscan", _hdbscan_grid, needs_low_dim=True,
                             size_params=("min_cluster_size", "min_samples")),
    "agglomerative": ClustererSpec("agglomerative", _agglomerative_grid, needs_low_dim=True,
                                   size_params=("mean_cluster_size",)),
    "optics": ClustererSpec("optics", _optics_grid, needs_low_dim=True,
                            size_params=("min_samples", "min_cluster_size")),
    "kmeans": ClustererSpec("kmeans", _kmeans_grid, needs_low_dim=False, uses_true_k=True),
}


def get_clusterer(name: str) -> ClustererSpec:
    """Registry lookup with a helpful error."""
    try:
        return CLUSTERERS[name]
    except KeyError:
        raise KeyError(f"unknown clusterer {name!r}; known: {sorted(CLUSTERERS)}") from None


def default_grid(name: str, override: Grid | None = None) -> Grid:
    """Default grid of clusterer ``name``, with keys in ``override`` replaced."""
    get_clusterer(name)
    grid = {k: list(v) for k, v in DEFAULT_GRIDS[name].items()}
    grid.update({k: list(v) for k, v in (override or {}).items()})
    return grid


def fit_grid(X: np.ndarray, name: str, points: list[Params], seed: int = 0) -> list[GridFit]:
    """Fit clusterer ``name`` at every grid point (sharing work); one GridFit per point."""
    if not points:
        raise ValueError("empty parameter grid")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 3:
        raise ValueError(f"need a 2-D input with at least 3 rows, got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("clustering input contains non-finite values")
    fits = get_clusterer(name).fit_grid(X, points, seed)
    if len(fits) != len(points):  # pragma: no cover - internal invariant
        raise RuntimeError(f"{name}: {len(fits)} fits for {len(points)} grid points")
    return fits


def cluster(X: np.ndarray, name: str, params: Params, seed: int = 0) -> np.ndarray:
    """Cluster ``X`` with fixed ``params`` (no selection); returns labels, -1 = noise."""
    return fit_grid(X, name, [dict(params)], seed)[0].labels
