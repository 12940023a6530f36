"""Matched subsamples: same number of classes and same per-class counts in both sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.clustering.matched import matched_draws, matched_summary_long, summarize_matched


def per_class(labels: np.ndarray, idx: np.ndarray) -> list[int]:
    return sorted(np.unique(labels[idx], return_counts=True)[1].tolist())


def test_matched_subsamples_have_the_stated_sizes() -> None:
    rng = np.random.default_rng(0)
    seen = np.repeat(np.arange(12), rng.integers(2, 7, 12))  # many small classes
    unseen = np.repeat(np.arange(100, 106), rng.integers(10, 40, 6))  # few big ones
    unseen = np.concatenate([unseen, [999]])  # a singleton class is never drawn
    draws = matched_draws(seen, unseen, n_draws=5, seed=3)
    assert len(draws) == 5
    for idx_s, idx_u in draws:
        assert len(np.unique(idx_s)) == len(idx_s) and len(np.unique(idx_u)) == len(idx_u)
        assert len(np.unique(seen[idx_s])) == len(np.unique(unseen[idx_u])) == 6
        assert per_class(seen, idx_s) == per_class(unseen, idx_u)
        assert 999 not in set(unseen[idx_u])
    # seeded: same draws again, different draws differ
    again = matched_draws(seen, unseen, n_draws=5, seed=3)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(draws, again, strict=True))
    assert not all(np.array_equal(draws[0][0], d[0]) for d in draws[1:])


def test_matched_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        matched_draws(np.array([0, 0, 1]), np.array([5, 5, 6, 6]))


def test_summary_mean_and_spread_over_draws() -> None:
    t = pd.DataFrame({"seed": [0] * 4, "source": ["b"] * 4, "split": ["test", "test", "unseen",
                      "unseen"], "draw": [0, 1, 0, 1], "n_samples": [10, 10, 10, 10],
                      "ari": [0.5, 0.7, 0.2, 0.4]})
    s = summarize_matched(t).set_index("split")
    assert s.loc["test", "ari_mean"] == pytest.approx(0.6)
    assert s.loc["unseen", "ari_std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert (s["n_draws"] == 2).all() and "seed" in s.columns


def test_long_summary_for_the_report() -> None:
    t = pd.DataFrame({"source": ["f"] * 4, "split": ["test", "test", "unseen", "unseen"],
                      "models": ["seen", "seen", "unseen", "unseen"], "draw": [0, 1, 0, 1],
                      "n_classes": [5] * 4, "n_samples": [20, 30, 20, 30],
                      "kind": ["retrieval"] * 4, "selection_mode": [None] * 4,
                      "reducer": [None] * 4, "clusterer": [None] * 4,
                      "precision_at_1": [0.5, 0.7, 0.2, 0.4], "ari": [np.nan] * 4})
    s = matched_summary_long(t)
    assert set(s["metric"]) == {"precision_at_1"}  # missing metrics dropped
    row = s.set_index("split").loc["test"]
    assert row["mean"] == pytest.approx(0.6) and row["n_draws"] == 2
    assert row["n_classes"] == 5 and row["per_class"] == pytest.approx(5.0)
