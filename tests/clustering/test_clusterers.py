"""Each clusterer recovers planted, well-separated Gaussian blobs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from compcars_kedro.clustering import (
    CLUSTERERS,
    DEFAULT_GRIDS,
    default_grid,
    expand_grid,
    fit_grid,
    noise_as_singletons,
    select_and_cluster,
)
from compcars_kedro.clustering.clusterers import _hdbscan_grid
from tests.clustering import blobs as shared_blobs

K = 8


def blobs(seed: int, n_per: int = 40) -> tuple[np.ndarray, np.ndarray]:
    return shared_blobs(seed, K, n_per, n_features=8, cluster_std=0.6, box=20.0)


def _grid(name: str) -> dict:
    grid = default_grid(name)
    if CLUSTERERS[name].uses_true_k:
        grid["n_clusters"] = [K]
    return grid


def _ari(y: np.ndarray, labels: np.ndarray) -> float:
    return adjusted_rand_score(y, noise_as_singletons(labels))


def test_registry_and_default_grids() -> None:
    assert set(CLUSTERERS) == {"dbscan", "hdbscan", "agglomerative", "optics", "kmeans"}
    assert set(DEFAULT_GRIDS) == set(CLUSTERERS)
    assert [c for c, s in CLUSTERERS.items() if s.uses_true_k] == ["kmeans"]


def test_expand_grid_order_and_validation() -> None:
    pts = expand_grid({"a": [1, 2], "b": ["x"]})
    assert pts == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    with pytest.raises(ValueError):
        expand_grid({"a": []})


def test_grid_override_replaces_keys() -> None:
    grid = default_grid("dbscan", {"min_samples": [3]})
    assert grid["min_samples"] == [3]
    assert grid["eps_quantile"] == DEFAULT_GRIDS["dbscan"]["eps_quantile"]


@pytest.mark.parametrize("name", list(CLUSTERERS))
def test_internal_mode_recovers_blobs(name: str) -> None:
    X, y = blobs(0)
    res = select_and_cluster(X, name, _grid(name), "internal", seed=0)
    assert res.selection_mode == "internal"
    assert res.labels.shape == y.shape
    assert _ari(y, res.labels) > 0.95, res.params


@pytest.mark.parametrize(
    ("name", "min_ari"),
    # OPTICS-xi: the frozen xi leaves some blob edges as noise on the new split
    [("dbscan", 0.95), ("hdbscan", 0.95), ("agglomerative", 0.95), ("optics", 0.8)],
)
def test_transfer_mode_recovers_unseen_blobs(name: str, min_ari: float) -> None:
    X_sel, y_sel = blobs(1)
    # different centres: "unseen" classes. Same class size, because agglomerative transfers
    # mean_cluster_size (n_clusters = n_eval / mean_cluster_size).
    X_eval, y_eval = blobs(2)
    res = select_and_cluster(
        X_eval, name, _grid(name), "transfer", X_select=X_sel, y_select=y_sel, seed=0
    )
    assert res.selection_mode == "transfer"
    assert np.isfinite(res.selection_score)
    assert _ari(y_eval, res.labels) > min_ari, res.params


def test_dbscan_eps_quantile_is_scale_free() -> None:
    X, _ = blobs(0)
    pts = [{"eps_quantile": 0.75, "min_samples": 5}]
    a, b = fit_grid(X, "dbscan", pts)[0], fit_grid(X * 10.0, "dbscan", pts)[0]
    np.testing.assert_array_equal(a.labels, b.labels)
    assert b.resolved["eps"] == pytest.approx(10.0 * a.resolved["eps"])


def test_hdbscan_tree_reuse_matches_refit() -> None:
    X, _ = blobs(3)
    X = np.vstack([X, np.random.default_rng(0).uniform(-25, 25, (30, 8))])  # add noise
    pts = expand_grid(default_grid("hdbscan"))
    fast = _hdbscan_grid(X, pts, 0, reuse_tree=True)
    slow = _hdbscan_grid(X, pts, 0, reuse_tree=False)
    for f, s in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(f.labels, s.labels)


@pytest.mark.parametrize("name", ["agglomerative", "optics"])
def test_point_cap_assigns_everyone(name: str) -> None:
    X, y = blobs(0)
    grid = _grid(name) | {"max_points": [150]}
    res = select_and_cluster(X, name, grid, "internal", seed=0)
    assert res.labels.shape == y.shape
    assert res.resolved_params["n_fitted"] == 150
    assert _ari(y, res.labels) > 0.9


def test_kmeans_requires_k() -> None:
    X, _ = blobs(0)
    with pytest.raises(ValueError, match="n_clusters"):
        select_and_cluster(X, "kmeans", default_grid("kmeans"), "internal")


def test_unknown_clusterer() -> None:
    X, _ = blobs(0)
    with pytest.raises(KeyError):
        select_and_cluster(X, "spectral", None, "internal")


def test_connect_components_adds_sklearns_closest_pairs() -> None:
    from scipy.sparse import csgraph
    from sklearn.neighbors import kneighbors_graph
    from sklearn.utils.graph import _fix_connected_components

    from compcars_kedro.clustering.clusterers import connect_components

    X, _ = blobs(0)
    conn = kneighbors_graph(X, n_neighbors=3, include_self=False)
    n_comp, labels = csgraph.connected_components(conn, directed=False)
    assert n_comp > 1
    ours = connect_components(conn, X)
    assert csgraph.connected_components(ours, directed=False)[0] == 1
    ref = _fix_connected_components(X, conn.tolil(), n_comp, labels, mode="connectivity")
    def edges(g):
        return set(zip(*(g + g.T).nonzero(), strict=True))

    assert edges(ours) == edges(ref)  # the same closest pairs scikit-learn would add
