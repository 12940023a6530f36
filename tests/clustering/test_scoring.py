"""The internal (label-free) selection score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compcars_kedro.clustering import internal_score, scoring


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


def test_internal_score_with_shared_distances_is_the_same(data) -> None:
    X, y = data["X"], data["y"]
    labels = y.copy()
    labels[::7] = -1
    D = scoring.sample_distances(X, sample_size=60, seed=1)
    assert D.shape == (60, 60)
    assert internal_score(X, labels, sample_size=60, seed=1, distances=D) == pytest.approx(
        internal_score(X, labels, sample_size=60, seed=1), rel=1e-6)
