"""clustering node: every source x split x mode row, honest selection, labelled reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.clustering.matched import summarize_matched
from compcars_kedro.datasets.embeddings import EmbeddingSet
from compcars_kedro.pipelines.clustering.nodes import (
    MATCHED_FRONT,
    cluster_embeddings,
    matched_metrics,
)

KEYS = {"variant": "v", "keys": {"variant": "v", "model": "m", "loss": "l", "views": "front", "seed": 0}}
PARAMS = {"n_jobs": 1,  # n_jobs=2 vs 1: tests/clustering/test_selection.py
          "reducers": ["pca"], "clusterers": ["hdbscan", "agglomerative", "kmeans"],
          "selection_modes": ["internal", "transfer"],
          "reducer_params": {"pca": {"n_components": 8}},
          "grids": {"hdbscan": {"min_cluster_size": [3, 5], "min_samples": [2]},
                    "agglomerative": {"mean_cluster_size": [3, 6, 12]}}}


def _blobs(n_classes: int, per_class: int, seed: int, offset: int = 0, spread: float = 0.05
           ) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, 32))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centers[labels] + spread * rng.normal(size=(len(labels), 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = pd.DataFrame({"sample_id": [f"s{offset}_{i}" for i in range(len(labels))],
                          "label": labels + offset})
    return EmbeddingSet(x.astype(np.float32), index)


@pytest.fixture(scope="module")
def sets():
    val, test, unseen = _blobs(6, 6, 0), _blobs(6, 6, 1), _blobs(5, 6, 2, offset=100)
    noisy = [_blobs(6, 6, s, spread=2.0) for s in (3, 4)] + [_blobs(5, 6, 5, 100, spread=2.0)]
    return (*noisy, val, test, unseen)


def test_rows_for_every_source_split_mode_and_method(sets) -> None:
    table, assign = cluster_embeddings(*sets, PARAMS, KEYS)
    # sources x splits x (modes x chosen clusterers + one true-k reference)
    assert len(table) == 2 * 2 * (2 * 2 + 1)
    assert set(table["models"]) == {"seen", "unseen"}
    transfer = table.loc[table["selection_mode"] == "transfer"]
    assert (transfer["selection_split"] == "val").all()
    kmeans = table.loc[table["clusterer"] == "kmeans"]
    assert kmeans["uses_true_k"].all() and len(kmeans) == 4
    assert (kmeans["selection_mode"] == "reference").all()
    assert (kmeans["selection_split"] == "none").all()
    assert set(table.loc[~table["uses_true_k"], "selection_mode"]) == {"internal", "transfer"}
    km_assign = assign.loc[assign["clusterer"] == "kmeans", "selection_mode"]
    assert set(km_assign) == {"reference"}
    # noise-aware metrics are present and bounded
    for col in ("ari", "ami", "nmi", "ari_nonnoise", "purity", "pct_pure_clusters",
                "pct_dominant_clusters", "noise_fraction", "n_clusters", "runtime_s"):
        assert col in table.columns
    # structured (fine-tuned stand-in) beats noise (baseline stand-in) on both splits
    best = table.groupby(["source", "split"])["ari"].max()
    assert (best["finetuned"] > best["baseline"] + 0.3).all()
    assert set(assign["sample_id"]) >= set(sets[4].index["sample_id"])


def test_selection_never_reads_reported_labels(sets) -> None:
    a, _ = cluster_embeddings(*sets, PARAMS, KEYS)
    shuffled = []
    for i, emb in enumerate(sets):
        if i in (1, 2, 4, 5):  # the reported splits (test, unseen) of both sources
            perm = np.random.default_rng(i).permutation(len(emb.index))
            index = emb.index.assign(label=emb.index["label"].to_numpy()[perm])
            emb = EmbeddingSet(emb.vectors, index)
        shuffled.append(emb)
    b, _ = cluster_embeddings(*shuffled, PARAMS, KEYS)
    chosen = a["clusterer"] != "kmeans"
    pd.testing.assert_series_equal(a.loc[chosen, "params"], b.loc[chosen, "params"])
    assert (a.loc[chosen, "ari"] != b.loc[chosen, "ari"]).any()  # scores did use the labels


def test_bad_clustering_parameter_is_named(sets) -> None:
    with pytest.raises(ValueError, match="clustering.*tsne|t-SNE"):
        cluster_embeddings(*sets, {**PARAMS, "reducers": ["tsne"]}, KEYS)
    with pytest.raises(ValueError, match="clusterers"):
        cluster_embeddings(*sets, {**PARAMS, "clusterers": ["spectral"]}, KEYS)


def test_method_that_cannot_run_becomes_an_error_row(sets) -> None:
    tiny = [EmbeddingSet(e.vectors[:4], e.index.iloc[:4].reset_index(drop=True)) for e in sets]
    params = {**PARAMS, "grids": {"hdbscan": {"min_cluster_size": [5], "min_samples": [5]}}}
    table, _ = cluster_embeddings(*tiny, params, KEYS)
    hdb = table.loc[table["clusterer"] == "hdbscan"]
    assert hdb["error"].notna().all() and hdb["error"].str.contains("min_samples").all()
    km = table.loc[table["clusterer"] == "kmeans"]
    assert km["error"].isna().all() and km["ari"].notna().all()


def test_matched_metrics_rows_and_sizes(sets) -> None:
    params = {**PARAMS, "matched": {"draws": 3, "seed": 1, "clusterers": ["hdbscan", "kmeans"]}}
    table = matched_metrics(*sets, params, KEYS)
    assert list(table.columns[:len(KEYS["keys"])]) == list(KEYS["keys"])
    for col in MATCHED_FRONT:
        assert col in table.columns
    assert set(table["draw"]) == {0, 1, 2}
    retrieval = table.loc[table["kind"] == "retrieval"]
    assert len(retrieval) == 2 * 3 * 2  # sources x draws x splits
    assert retrieval[["mean_average_precision_at_r", "precision_at_1"]].notna().all().all()
    # seen and unseen subsamples of a draw: same classes count and sample count
    sizes = retrieval.pivot_table(index=["source", "draw"], columns="split",
                                  values=["n_classes", "n_samples"])
    assert (sizes[("n_classes", "test")] == sizes[("n_classes", "unseen")]).all()
    assert (sizes[("n_samples", "test")] == sizes[("n_samples", "unseen")]).all()
    assert (sizes[("n_classes", "test")] == 5).all()  # min(6 seen, 5 unseen) classes
    clustering = table.loc[table["kind"] == "clustering"]
    # per source x draw x split: hdbscan x 2 modes + kmeans reference
    assert len(clustering) == 2 * 3 * 2 * 3
    assert set(clustering["selection_mode"]) == {"internal", "transfer", "reference"}
    assert clustering["ari"].notna().all() and clustering["ami"].notna().all()
    summary = summarize_matched(table)
    assert (summary["n_draws"] == 3).all() and "mean_average_precision_at_r_mean" in summary


def test_n_jobs_is_validated_and_named(sets) -> None:
    with pytest.raises(ValueError, match="n_jobs"):
        cluster_embeddings(*sets, {**PARAMS, "n_jobs": 0}, KEYS)
