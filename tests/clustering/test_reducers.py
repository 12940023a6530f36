"""Reducer registry, shapes, the t-SNE refusal and one tiny UMAP call."""

from __future__ import annotations

import numpy as np
import pytest

from compcars_kedro.clustering import REDUCERS, density_input, reduce, reducers, run_grid


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((80, 64)).astype(np.float32)


def test_registry_is_explicit() -> None:
    assert set(REDUCERS) == {"pca", "umap", "tsne", "none"}


def test_none_is_l2_normalised_passthrough(X: np.ndarray) -> None:
    Z = reduce(X, "none")
    assert Z.shape == X.shape
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)


def test_pca_shapes(X: np.ndarray) -> None:
    assert reduce(X, "pca").shape == (80, 50)
    assert reduce(X, "pca", {"n_components": 5}).shape == (80, 5)
    assert reduce(X[:20], "pca").shape == (20, 20)  # clamped to n_samples


def test_density_input_caps_dims(X: np.ndarray) -> None:
    assert density_input(X, max_dims=50).shape == (80, 50)
    assert density_input(X[:, :10]).shape == (80, 10)


def test_tsne_refused_as_clustering_input(X: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D views only"):
        reduce(X, "tsne")
    with pytest.raises(ValueError, match="2-D views only"):
        run_grid(X, np.zeros(len(X)), ["tsne"], ["kmeans"], "internal", progress=False)


def test_tsne_allowed_for_views(X: np.ndarray) -> None:
    Z = reduce(X[:40], "tsne", {"perplexity": 5.0}, for_clustering=False)
    assert Z.shape == (40, 2)
    Z2 = reduce(X[:40], "tsne", {"perplexity": 5.0}, allow_tsne_input=True)
    assert Z2.shape == (40, 2)


def test_unknown_reducer(X: np.ndarray) -> None:
    with pytest.raises(KeyError):
        reduce(X, "lda")


def test_tiny_umap(X: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    # the only UMAP calls in the suite (numba JIT dominates their runtime)
    Z = reduce(X[:60], "umap", {"n_components": 3, "n_neighbors": 5}, seed=0)
    assert Z.shape == (60, 3)
    assert np.isfinite(Z).all()
    # umap's own kernels now have numba's on-disk cache (umap 0.5 declares almost none)
    import sys

    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    uncached = [f"{name}.{attr}" for name, mod in list(sys.modules.items())
                if mod is not None and name.split(".")[0] == "umap"
                for attr, obj in vars(mod).items()
                if isinstance(obj, Dispatcher) and isinstance(obj._cache, NullCache)]
    assert not uncached
    assert reducers.enable_numba_cache() == 0  # idempotent
    # the large-data path: exact kNN graph handed to umap instead of pynndescent
    monkeypatch.setattr(reducers, "UMAP_APPROX_MIN_ROWS", 10)
    calls = []
    real = reducers._exact_knn
    monkeypatch.setattr(reducers, "_exact_knn", lambda *a: calls.append(a) or real(*a))
    Z2 = reduce(X[:60], "umap", {"n_components": 3, "n_neighbors": 5}, seed=0)
    assert len(calls) == 1 and Z2.shape == (60, 3) and np.isfinite(Z2).all()
    idx, dist = real(X[:20], 4, "euclidean")
    assert (idx[:, 0] == np.arange(20)).all() and (dist[:, 0] < 1e-3).all()
