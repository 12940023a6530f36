"""Dimensionality reducers behind an explicit registry.

Geometry rule (cosine-normalised input)
---------------------------------------
Embeddings are compared by cosine similarity, so every reducer first L2-normalises the rows
(``l2_normalize=True`` by default). On the unit sphere squared euclidean distance equals
``2 - 2 * cosine``, so PCA / euclidean clustering on normalised rows is cosine clustering.
Outputs are *not* re-normalised; clusterers work in euclidean distance on the reduced input.

Clustering-input rules
----------------------
* ``pca``  (default 50 components) and ``umap`` (default: PCA to 50, then UMAP to 10 dims with
  ``min_dist=0``) are clustering inputs. ``none`` passes the normalised embeddings through.
* ``tsne`` is for 2-D *views* only: it does not preserve global density/distances, has no
  ``transform`` and is slow. ``reduce(..., for_clustering=True)`` (the default) refuses it
  unless ``allow_tsne_input=True``.
* Density / neighbour-graph clusterers (DBSCAN, HDBSCAN, OPTICS, kNN-agglomerative) must get a
  low-dimensional input: :func:`density_input` PCA-reduces anything wider than
  ``max_dims`` (default 50) so the neighbour queries and the O(n^2 d) HDBSCAN/OPTICS work scale.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import normalize

logger = logging.getLogger(__name__)

DEFAULT_MAX_DENSITY_DIMS = 50

DEFAULT_REDUCER_PARAMS: dict[str, dict[str, Any]] = {
    "none": {"l2_normalize": True},
    "pca": {"n_components": 50, "l2_normalize": True},
    "umap": {
        "n_components": 10,
        "n_neighbors": 15,
        "min_dist": 0.0,
        "metric": "euclidean",
        "pca_components": 50,
        "l2_normalize": True,
    },
    "tsne": {"n_components": 2, "perplexity": 30.0, "pca_components": 50, "l2_normalize": True},
}

Reducer = Callable[[np.ndarray, dict[str, Any], int], np.ndarray]


def _prep(X: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {X.shape}")
    return normalize(X) if params.get("l2_normalize", True) else X


def _pca_raw(X: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """PCA without normalisation; clamps n_components to what the data allows."""
    k = int(min(n_components, X.shape[0], X.shape[1]))
    if k >= X.shape[1]:
        return np.ascontiguousarray(X, dtype=np.float32)
    out = PCA(n_components=k, random_state=seed).fit_transform(X)
    return np.ascontiguousarray(out, dtype=np.float32)


def _none(X: np.ndarray, params: dict[str, Any], seed: int) -> np.ndarray:
    return np.ascontiguousarray(_prep(X, params))


def _pca(X: np.ndarray, params: dict[str, Any], seed: int) -> np.ndarray:
    return _pca_raw(_prep(X, params), int(params["n_components"]), seed)


NUMBA_CACHED_PACKAGES = ("umap", "pynndescent")


def enable_numba_cache(packages: tuple[str, ...] = NUMBA_CACHED_PACKAGES) -> int:
    """Turn on numba's on-disk cache for every jitted function of ``packages`` lacking it.

    pynndescent declares ``cache=True`` on its kernels, but umap 0.5 does not on most of
    its own (``smooth_knn_dist``, ``compute_membership_strengths``, the layout optimiser, its
    distances...): each new process recompiled them, which costs far more than a 20k-point
    fit (see docs/clustering.md). This calls numba's ``Dispatcher.enable_caching()`` on each
    module-level dispatcher that has no cache yet, before its first compilation, so the
    machine code lands in ``NUMBA_CACHE_DIR`` (``.cache/numba``, set by
    :mod:`compcars_kedro._environment`) and later processes load it. Returns how many
    dispatchers were switched on; idempotent.
    """
    import sys

    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    switched = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(obj._cache, NullCache):
                obj.enable_caching()
                switched += 1
    if switched:
        logger.debug("numba on-disk cache enabled for %d functions of %s", switched, packages)
    return switched


#: at or above this many rows umap builds its kNN graph with pynndescent (below: exact)
UMAP_APPROX_MIN_ROWS = 4096


def _exact_knn(X: np.ndarray, n_neighbors: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN graph in umap's layout (each point is its own first neighbour)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=n_neighbors, metric=metric).fit(X)
    dists, idx = nn.kneighbors(X)
    return idx.astype(np.int32), dists.astype(np.float32)


def _umap(X: np.ndarray, params: dict[str, Any], seed: int) -> np.ndarray:
    """PCA (``pca_components``) then UMAP with a fixed seed.

    From :data:`UMAP_APPROX_MIN_ROWS` rows on, the kNN graph is computed exactly with
    scikit-learn and handed to umap (``precomputed_knn``) instead of umap's pynndescent:
    pynndescent's ``nn_descent`` cannot be cached by numba ("uses dynamic globals") and was
    recompiled by every process (~1-2 min of CPU, more than the 20k-point fit itself); the
    exact graph on the <= 50-d PCA input takes seconds and is deterministic.
    """
    import umap  # lazy: importing umap triggers numba start-up

    enable_numba_cache()
    Xp = _prep(X, params)
    if params.get("pca_components"):
        Xp = _pca_raw(Xp, int(params["pca_components"]), seed)
    n_neighbors = int(min(params["n_neighbors"], max(2, Xp.shape[0] - 1)))
    knn: tuple[Any, Any, Any] = (None, None, None)
    if Xp.shape[0] >= UMAP_APPROX_MIN_ROWS:
        knn = (*_exact_knn(Xp, n_neighbors, str(params["metric"])), None)
    model = umap.UMAP(
        n_components=int(params["n_components"]),
        n_neighbors=n_neighbors,
        min_dist=float(params["min_dist"]),
        metric=str(params["metric"]),
        random_state=seed,
        n_jobs=1,  # a fixed random_state forces single-threaded UMAP anyway
        precomputed_knn=knn,
    )
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # umap's parallel kernels: same output for any thread count
    try:
        with warnings.catch_warnings():
            # no search index with a precomputed graph: only transform() would need one
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
            return np.ascontiguousarray(model.fit_transform(Xp), dtype=np.float32)
    finally:
        numba.set_num_threads(threads)


def _tsne(X: np.ndarray, params: dict[str, Any], seed: int) -> np.ndarray:
    Xp = _prep(X, params)
    if params.get("pca_components"):
        Xp = _pca_raw(Xp, int(params["pca_components"]), seed)
    perplexity = float(min(params["perplexity"], max(1.0, (Xp.shape[0] - 1) / 3.0)))
    model = TSNE(
        n_components=int(params["n_components"]),
        perplexity=perplexity,
        init="pca",
        random_state=seed,
    )
    return np.ascontiguousarray(model.fit_transform(Xp), dtype=np.float32)


REDUCERS: dict[str, Reducer] = {
    "none": _none,
    "pca": _pca,
    "umap": _umap,
    "tsne": _tsne,
}

VIEW_ONLY_REDUCERS: frozenset[str] = frozenset({"tsne"})


def reducer_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Default parameters of reducer ``name`` updated with ``params``."""
    if name not in REDUCERS:
        raise KeyError(f"unknown reducer {name!r}; known: {sorted(REDUCERS)}")
    merged = dict(DEFAULT_REDUCER_PARAMS[name])
    merged.update(params or {})
    return merged


def check_clustering_reducer(name: str, allow_tsne_input: bool = False) -> None:
    """Raise if ``name`` may not be used as clustering input (t-SNE unless explicitly allowed)."""
    if name not in REDUCERS:
        raise KeyError(f"unknown reducer {name!r}; known: {sorted(REDUCERS)}")
    if name in VIEW_ONLY_REDUCERS and not allow_tsne_input:
        raise ValueError(
            f"reducer {name!r} is for 2-D views only and is refused as clustering input; "
            "pass allow_tsne_input=True to override"
        )


def reduce(
    X: np.ndarray,
    name: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    for_clustering: bool = True,
    allow_tsne_input: bool = False,
) -> np.ndarray:
    """Reduce ``X`` (n, d) with reducer ``name``; returns a float32 (n, k) array.

    ``for_clustering=True`` applies :func:`check_clustering_reducer` (refuses t-SNE unless
    ``allow_tsne_input``); use ``for_clustering=False`` for 2-D plots.
    """
    if for_clustering:
        check_clustering_reducer(name, allow_tsne_input)
    merged = reducer_params(name, params)
    logger.info("reducing %s with %s %s", X.shape, name, merged)
    return REDUCERS[name](X, merged, seed)


def density_input(
    X: np.ndarray, seed: int = 0, max_dims: int = DEFAULT_MAX_DENSITY_DIMS
) -> np.ndarray:
    """Input for density / neighbour-graph clusterers: PCA to ``max_dims`` if wider.

    Rows are L2-normalised before that PCA (cosine geometry); inputs already at most
    ``max_dims`` wide are returned unchanged (as float32).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.shape[1] <= max_dims:
        return np.ascontiguousarray(X)
    logger.info("density input: PCA %d -> %d dims", X.shape[1], max_dims)
    return _pca_raw(normalize(X), max_dims, seed)
