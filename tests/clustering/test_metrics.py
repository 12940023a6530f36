"""Cluster metrics against hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from compcars_kedro.clustering.metrics import METRIC_KEYS, cluster_metrics, noise_as_singletons


def test_noise_as_singletons_gives_each_noise_point_a_new_label() -> None:
    out = noise_as_singletons(np.array([0, -1, 1, -1]))
    assert out.tolist() == [0, 2, 1, 3]


def test_hand_computed_noise_as_singleton_case() -> None:
    # y_true=[0,0,1,1], y_pred=[0,0,1,-1]  ->  noise as singleton: pred=[0,0,1,2]
    # contingency rows(true) x cols(pred): [[2,0,0],[0,1,1]]
    # sum_ij C(n_ij,2)=1; rows: C(2,2)+C(2,2)=2; cols: C(2,2)+0+0=1; C(4,2)=6
    # expected=2*1/6=1/3; max=(2+1)/2=3/2; ARI=(1-1/3)/(3/2-1/3)=(2/3)/(7/6)=4/7
    # NMI(arith): H(true)=ln2, H(pred)=1.5 ln2, MI=ln2 (pred determines true) -> ln2/1.25ln2=0.8
    # purity: cluster0 majority 2, cluster1 majority 1, noise wrong -> 3/4
    m = cluster_metrics([0, 0, 1, 1], [0, 0, 1, -1])
    assert m["ari"] == pytest.approx(4 / 7)
    assert m["nmi"] == pytest.approx(0.8)
    assert m["purity"] == pytest.approx(0.75)
    # non-noise variant: [0,0,1] vs [0,0,1] is perfect
    assert m["ari_nonnoise"] == pytest.approx(1.0)
    assert m["ami_nonnoise"] == pytest.approx(1.0)
    assert m["nmi_nonnoise"] == pytest.approx(1.0)
    # size-weighted over all 4 points: cluster0 (2 points) is pure, cluster1 is a singleton
    assert m["pct_pure_clusters"] == pytest.approx(50.0)
    assert m["pct_dominant_clusters"] == pytest.approx(50.0)
    assert m["n_clusters"] == 2
    assert m["noise_fraction"] == pytest.approx(0.25)
    assert math.isnan(m["silhouette"])  # no X given
    assert set(METRIC_KEYS) <= set(m)


def test_purity_pure_and_dominant_on_crafted_example() -> None:
    y_true = ["a", "a", "a", "a", "b", "c", "c", "d", "b", "d"]
    y_pred = [0, 0, 0, 0, 0, 1, 1, 2, 2, -1]
    # cluster0: a,a,a,a,b -> majority 4, share 0.8 (dominant, not pure)
    # cluster1: c,c       -> majority 2, share 1.0 (pure)
    # cluster2: d,b       -> majority 1, share 0.5
    # noise (1 point) counts wrong: purity = (4+2+1)/10 = 0.7
    # % pure / dominant are weighted by cluster size over all 10 points (noise included):
    # pure: cluster1 (2 points) -> 20 %; dominant: cluster0 + cluster1 (7 points) -> 70 %
    m = cluster_metrics(y_true, y_pred)
    assert m["purity"] == pytest.approx(0.7)
    assert m["pct_pure_clusters"] == pytest.approx(20.0)
    assert m["pct_dominant_clusters"] == pytest.approx(70.0)
    assert m["n_clusters"] == 3
    assert m["noise_fraction"] == pytest.approx(0.1)
    assert m["n_true_classes"] == 4


def test_singletons_are_never_pure_clusters() -> None:
    y_true = [0, 0, 0, 1, 1, 1]
    singles = cluster_metrics(y_true, [0, 1, 2, 3, 4, 5])  # every point its own cluster
    assert singles["pct_pure_clusters"] == 0.0 and singles["pct_dominant_clusters"] == 0.0
    # a big impure cluster weighs more than a small pure one
    m = cluster_metrics(y_true + [1, 1], [0, 0, 0, 0, 0, 0, 1, 1])
    assert m["pct_pure_clusters"] == pytest.approx(25.0)


def test_ami_with_noise_as_singletons_and_on_non_noise_points() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 0, -1, 1, 1, 1, -1, 2])
    m = cluster_metrics(y_true, y_pred)
    assert m["ami"] == pytest.approx(
        adjusted_mutual_info_score(y_true, noise_as_singletons(y_pred)))
    keep = y_pred != -1
    assert m["ami_nonnoise"] == pytest.approx(
        adjusted_mutual_info_score(y_true[keep], y_pred[keep]))
    assert m["ami"] < m["ami_nonnoise"]  # declaring noise never helps the headline


def test_noise_counts_as_wrong_in_purity() -> None:
    # same clustering, but marking a correct point as noise lowers purity
    clean = cluster_metrics([0, 0, 1, 1], [0, 0, 1, 1])
    noisy = cluster_metrics([0, 0, 1, 1], [0, -1, 1, 1])
    assert clean["purity"] == 1.0
    assert noisy["purity"] == pytest.approx(0.75)
    assert noisy["ari"] < clean["ari"]


def test_all_noise() -> None:
    m = cluster_metrics([0, 0, 1, 1], [-1, -1, -1, -1])
    assert m["n_clusters"] == 0
    assert m["noise_fraction"] == 1.0
    assert m["purity"] == 0.0
    assert math.isnan(m["ari_nonnoise"])
    assert m["ari"] == pytest.approx(0.0)  # all singletons vs 2 classes


def test_without_noise_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 5, 50)
    m = cluster_metrics(y_true, y_pred)
    assert m["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred))
    assert m["ari"] == pytest.approx(m["ari_nonnoise"])


def test_silhouette_on_non_noise_points() -> None:
    X = np.array([[0.0, 0.0], [0.0, 0.1], [10.0, 0.0], [10.0, 0.1], [5.0, 5.0]])
    m = cluster_metrics([0, 0, 1, 1, 1], [0, 0, 1, 1, -1], X)
    assert m["silhouette"] > 0.95  # the noise point (which would hurt) is ignored
    one = cluster_metrics([0, 0, 1, 1, 1], [0, 0, 0, 0, -1], X)
    assert math.isnan(one["silhouette"])


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        cluster_metrics([0, 1], [0, 1, 1])
