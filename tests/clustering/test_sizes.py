"""Transfer mode: size parameters travel relative to the class size (never absolute counts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compcars_kedro.clustering import run_grid
from compcars_kedro.clustering.sizes import scale_sizes, size_scale


def classes(n_classes: int, per_class: int, seed: int, spread: float = 0.15):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + spread / 4 * rng.normal(size=(len(y), 16))
    return X.astype(np.float32), y


def test_scale_follows_the_class_size_without_eval_labels() -> None:
    X_sel, y_sel = classes(20, 4, 0)
    X_big, y_big = classes(10, 24, 1)
    scale = size_scale(X_big, X_sel, y_sel, seed=0)
    assert 3.0 < scale < 12.0  # classes 6x bigger
    same = size_scale(*classes(20, 4, 2)[:1], X_sel, y_sel, seed=0)
    assert 0.6 < same < 1.6
    # the evaluated split's labels are not an input at all; permuting rows changes nothing
    perm = np.random.default_rng(0).permutation(len(X_big))
    assert size_scale(X_big[perm], X_sel, y_sel, seed=0) == pytest.approx(scale, rel=0.3)


def test_scale_sizes_rounds_with_floors_and_leaves_fractions() -> None:
    p = {"min_cluster_size": 2, "min_samples": 3, "mean_cluster_size": 4.0, "xi": 0.05}
    out = scale_sizes(p, ("min_cluster_size", "min_samples", "mean_cluster_size"), 5.0)
    assert out == {"min_cluster_size": 10, "min_samples": 15, "mean_cluster_size": 20.0,
                   "xi": 0.05}
    low = scale_sizes(p, ("min_cluster_size", "min_samples"), 0.1)
    assert low["min_cluster_size"] == 2 and low["min_samples"] == 1
    frac = scale_sizes({"min_cluster_size": 0.05, "min_samples": None},
                       ("min_cluster_size", "min_samples"), 5.0)
    assert frac == {"min_cluster_size": 0.05, "min_samples": None}


def test_transfer_from_tiny_val_classes_to_big_unseen_classes() -> None:
    X_sel, y_sel = classes(30, 3, 0)
    X_eval, y_eval = classes(8, 30, 1)
    grids = {"hdbscan": {"min_cluster_size": [2, 3, 5], "min_samples": [2]},
             "agglomerative": {"mean_cluster_size": [2, 3, 5]}}
    kw = {"X_select": X_sel, "y_select": y_sel, "seed": 0, "grids": grids, "progress": False,
          "n_jobs": 1, "reducer_params": {"none": {"l2_normalize": False}}}
    rel, _ = run_grid(X_eval, y_eval, ["none"], ["hdbscan", "agglomerative"], "transfer", **kw)
    absolute, _ = run_grid(X_eval, y_eval, ["none"], ["hdbscan", "agglomerative"], "transfer",
                           transfer_sizes="absolute", **kw)
    agg = rel.set_index("clusterer").loc["agglomerative"]
    resolved = json.loads(agg["resolved_params"])
    chosen = json.loads(agg["params"])["mean_cluster_size"]
    assert resolved["size_scale"] > 3
    assert resolved["eval_params"]["mean_cluster_size"] > 3 * chosen
    # relative sizes recover the big classes; frozen absolute counts shatter them
    assert agg["ari"] > 0.9
    assert agg["ari"] > absolute.set_index("clusterer").loc["agglomerative", "ari"] + 0.3
    assert rel["n_clusters"].max() <= 3 * len(np.unique(y_eval))
