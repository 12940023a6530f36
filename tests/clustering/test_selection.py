"""Selection never reads the evaluated split's labels; run_grid output shape."""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs

from compcars_kedro.clustering import (
    ASSIGNMENT_COLUMNS,
    CLUSTERERS,
    METRICS_COLUMNS,
    internal_score,
    run_grid,
    select_and_cluster,
)
from compcars_kedro.clustering import selection as sel

ALL = list(CLUSTERERS)
RAW = {"none": {"l2_normalize": False}}


def blobs(seed: int, k: int = 6, n_per: int = 30) -> tuple[np.ndarray, np.ndarray]:
    return make_blobs(
        n_samples=k * n_per,
        centers=k,
        n_features=6,
        cluster_std=1.0,
        center_box=(-12, 12),
        random_state=seed,
    )


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X_eval, y_eval = blobs(10)
    X_sel, y_sel = blobs(11, k=5)
    perm = np.random.default_rng(0).permutation(len(y_eval))
    return {"X": X_eval, "y": y_eval, "y_perm": y_eval[perm], "Xs": X_sel, "ys": y_sel}


def _run(d: dict[str, np.ndarray], y: np.ndarray, mode: str):
    kw = {"X_select": d["Xs"], "y_select": d["ys"]} if mode == "transfer" else {}
    return run_grid(
        d["X"], y, ["none"], ALL, mode, seed=0, reducer_params=RAW, progress=False, **kw
    )


def test_eval_labels_are_not_a_selection_parameter() -> None:
    for fn in (sel._select_internal, sel._select_transfer):
        params = set(inspect.signature(fn).parameters)
        assert not params & {"y_eval", "y_true", "y", "y_eval_for_oracle"}
    assert "y_eval" not in inspect.signature(select_and_cluster).parameters


@pytest.mark.parametrize("mode", ["internal", "transfer"])
def test_permuting_eval_labels_leaves_chosen_params_unchanged(data, mode: str) -> None:
    a, _ = _run(data, data["y"], mode)
    b, _ = _run(data, data["y_perm"], mode)
    assert list(a["params"]) == list(b["params"])
    assert list(a["resolved_params"]) == list(b["resolved_params"])
    np.testing.assert_allclose(a["selection_score"], b["selection_score"], equal_nan=True)
    chosen = ~a["uses_true_k"]
    assert (a.loc[chosen, "selection_mode"] == mode).all()
    assert (a.loc[~chosen, "selection_mode"] == "reference").all()  # kmeans with the true k
    # ... while the metrics do see the labels
    assert (a["ari"] > b["ari"] + 0.5).all()


def test_oracle_rows_are_labelled_and_selection_can_change(data) -> None:
    a, _ = _run(data, data["y"], "oracle")
    b, _ = _run(data, data["y_perm"], "oracle")
    for t in (a, b):
        assert (t["selection_mode"] == np.where(t["uses_true_k"], "reference", "oracle")).all()
    # oracle selection reads the evaluated labels: its choice depends on them
    multi = a["n_grid_points"] > 1
    assert (a.loc[multi, "params"] != b.loc[multi, "params"]).any()
    assert not np.allclose(a.loc[multi, "selection_score"], b.loc[multi, "selection_score"])


def test_y_eval_for_oracle_rejected_outside_oracle(data) -> None:
    with pytest.raises(ValueError, match="oracle"):
        select_and_cluster(data["X"], "dbscan", None, "internal", y_eval_for_oracle=data["y"])
    with pytest.raises(ValueError, match="X_select"):
        select_and_cluster(data["X"], "dbscan", None, "transfer")
    with pytest.raises(ValueError, match="mode"):
        select_and_cluster(data["X"], "dbscan", None, "cheat")


def test_internal_score_penalises_noise_and_degenerates(data) -> None:
    X, y = data["X"], data["y"]
    clean = internal_score(X, y)
    noisy = y.copy()
    noisy[::5] = -1
    assert 0 < internal_score(X, noisy) < clean
    assert math.isnan(internal_score(X, np.zeros_like(y)))  # one cluster
    assert math.isnan(internal_score(X, np.full_like(y, -1)))  # all noise


def test_internal_score_subsamples(data) -> None:
    X, y = data["X"], data["y"]
    s = internal_score(X, y, sample_size=60, seed=1)
    assert s == internal_score(X, y, sample_size=60, seed=1)  # fixed seed: deterministic
    assert 0 < s <= 1


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
    real = sel.select_and_cluster

    def counting(X_eval, clusterer, *args, **kwargs):
        calls.append(clusterer)
        if clusterer == "optics":
            raise RuntimeError("optics broke")
        return real(X_eval, clusterer, *args, **kwargs)

    monkeypatch.setattr(sel, "select_and_cluster", counting)
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
    real = sel.reduce
    monkeypatch.setattr(sel, "reduce", lambda X, name, *a, **k: reduced.append(name)
                        or real(X, name, *a, **k))
    cache: dict = {}
    kw = {"seed": 0, "progress": False, "n_jobs": 1, "reduction_cache": cache,
          "reducer_params": {"pca": {"n_components": 4}}}
    a, _ = run_grid(data["X"], data["y"], ["pca"], ["kmeans"], "internal", **kw)
    b, _ = run_grid(data["X"], data["y"], ["pca"], ["kmeans"], "internal", **kw)
    assert reduced == ["pca"] and len(cache) == 1
    assert a["ari"].iloc[0] == b["ari"].iloc[0]


def test_internal_score_with_shared_distances_is_the_same(data) -> None:
    X, y = data["X"], data["y"]
    labels = y.copy()
    labels[::7] = -1
    D = sel.sample_distances(X, sample_size=60, seed=1)
    assert D.shape == (60, 60)
    assert internal_score(X, labels, sample_size=60, seed=1, distances=D) == pytest.approx(
        internal_score(X, labels, sample_size=60, seed=1), rel=1e-6)
