"""run_grid: table shapes, sequential == parallel, one error row per failing method."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs

from compcars_kedro.clustering import ASSIGNMENT_COLUMNS, METRICS_COLUMNS, run_grid
from compcars_kedro.clustering import run as run_mod
from tests.clustering import ALL, RAW


def test_run_grid_tables(data) -> None:
    reducers = ["none", "pca"]
    metrics, assign = run_grid(
        data["X"],
        data["y"],
        reducers,
        ALL,
        "internal",
        seed=0,
        reducer_params=RAW | {"pca": {"n_components": 4, "l2_normalize": False}},
        progress=False,
    )
    assert list(metrics.columns) == list(METRICS_COLUMNS)
    assert len(metrics) == len(reducers) * len(ALL)
    assert set(zip(metrics["reducer"], metrics["clusterer"], strict=True)) == {
        (r, c) for r in reducers for c in ALL
    }
    assert metrics.loc[metrics["clusterer"] == "kmeans", "uses_true_k"].all()
    assert not metrics.loc[metrics["clusterer"] != "kmeans", "uses_true_k"].any()
    kmeans_params = json.loads(metrics.loc[metrics["clusterer"] == "kmeans", "params"].iloc[0])
    assert kmeans_params["n_clusters"] == len(np.unique(data["y"]))
    assert (metrics["runtime_s"] >= 0).all()
    assert list(assign.columns) == list(ASSIGNMENT_COLUMNS)
    assert len(assign) == len(metrics) * len(data["y"])
    assert (metrics["input_dim"] == np.where(metrics["reducer"] == "pca", 4, 6)).all()


def test_parallel_tables_identical_to_sequential(data) -> None:
    kw = {"X_select": data["Xs"], "y_select": data["ys"], "seed": 0, "progress": False,
          "reducer_params": RAW | {"pca": {"n_components": 4, "l2_normalize": False}}}
    seq, seq_assign = run_grid(data["X"], data["y"], ["none", "pca"], ALL, "transfer",
                               n_jobs=1, **kw)
    par, par_assign = run_grid(data["X"], data["y"], ["none", "pca"], ALL, "transfer",
                               n_jobs=2, **kw)
    timing = ["runtime_s", "reduce_runtime_s"]
    pd.testing.assert_frame_equal(seq.drop(columns=timing), par.drop(columns=timing))
    pd.testing.assert_frame_equal(seq_assign, par_assign)


def test_failing_method_is_isolated_and_each_method_runs_once(data, monkeypatch) -> None:
    calls: list[str] = []
    real = run_mod.select_and_cluster

    def counting(X_eval, clusterer, *args, **kwargs):
        calls.append(clusterer)
        if clusterer == "optics":
            raise RuntimeError("optics broke")
        return real(X_eval, clusterer, *args, **kwargs)

    monkeypatch.setattr(run_mod, "select_and_cluster", counting)
    metrics, assign = run_grid(data["X"], data["y"], ["none"], ALL, "internal", seed=0,
                               reducer_params=RAW, progress=False, n_jobs=1, errors="record")
    assert sorted(calls) == sorted(ALL)  # no rerun of the grid after the failure
    bad = metrics.set_index("clusterer").loc["optics"]
    assert "optics broke" in bad["error"] and np.isnan(bad["ari"])
    ok = metrics.loc[metrics["clusterer"] != "optics"]
    assert ok["error"].isna().all() and (ok["ari"] > 0.5).all()
    assert "optics" not in set(assign["clusterer"])
    with pytest.raises(RuntimeError, match="optics broke"):
        run_grid(data["X"], data["y"], ["none"], ALL, "internal", seed=0, reducer_params=RAW,
                 progress=False, n_jobs=1)


def test_reduction_cache_reuses_identical_reductions(data, monkeypatch) -> None:
    reduced: list[str] = []
    real = run_mod.reduce
    monkeypatch.setattr(run_mod, "reduce", lambda X, name, *a, **k: reduced.append(name)
                        or real(X, name, *a, **k))
    cache: dict = {}
    kw = {"seed": 0, "progress": False, "n_jobs": 1, "reduction_cache": cache,
          "reducer_params": {"pca": {"n_components": 4}}}
    a, _ = run_grid(data["X"], data["y"], ["pca"], ["kmeans"], "internal", **kw)
    b, _ = run_grid(data["X"], data["y"], ["pca"], ["kmeans"], "internal", **kw)
    assert reduced == ["pca"] and len(cache) == 1
    assert a["ari"].iloc[0] == b["ari"].iloc[0]


def test_reductions_and_tables_do_not_depend_on_n_jobs() -> None:
    # 1000 x 128 is enough for OpenBLAS to split PCA's randomized SVD over 2 threads: the
    # in-process run (2 BLAS threads) gave another PCA (~1e-4) than a 1-thread worker, which
    # UMAP turned into another choice at 8000 x 1024. Every task now runs with one thread.
    X, y = make_blobs(n_samples=1000, n_features=128, centers=20, cluster_std=4.0,
                      random_state=0)
    out = {}
    for n_jobs in (1, 2):
        cache: dict = {}
        metrics, assign = run_grid(X, y, ["pca"], ["hdbscan", "kmeans"], "internal", seed=0,
                                   n_jobs=n_jobs, reduction_cache=cache, progress=False)
        (reduced,) = cache.values()
        out[n_jobs] = (metrics, assign, reduced)
    (m1, a1, (Z1, low1, _)), (m2, a2, (Z2, low2, _)) = out[1], out[2]
    np.testing.assert_array_equal(Z1, Z2)  # the input of every fit, bit for bit
    np.testing.assert_array_equal(low1, low2)
    timing = ["runtime_s", "reduce_runtime_s"]
    pd.testing.assert_frame_equal(m1.drop(columns=timing), m2.drop(columns=timing))
    pd.testing.assert_frame_equal(a1, a2)
