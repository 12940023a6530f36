"""Matched subsamples: seen and unseen sets made comparable before comparing their metrics.

Seen (test) and unseen sets differ in how many classes they hold and how many samples each
class has; retrieval and clustering scores depend on both (more classes, harder; more
samples per class, easier MAP@R). :func:`matched_draws` draws, per seeded draw, from each
of two labelled sets the SAME number of classes ``K`` with the SAME per-class sample counts:

1. classes with at least ``min_class_size`` samples are eligible in each set;
   ``K = min(#eligible in A, #eligible in B)``;
2. ``K`` classes are drawn at random from each set; the drawn classes of each set are
   ranked by size (ties broken by the random draw order) and paired rank by rank;
3. pair ``i`` gets ``c_i = min(size of A's i-th class, size of B's i-th class)`` samples,
   drawn at random without replacement in both sets.

So both subsamples have ``K`` classes and the same multiset of per-class counts
``{c_1..c_K}``; which classes and which samples vary with the draw (mean and spread over
draws: :func:`summarize_matched`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _eligible(labels: np.ndarray, min_class_size: int) -> tuple[np.ndarray, np.ndarray]:
    classes, counts = np.unique(labels, return_counts=True)
    keep = counts >= min_class_size
    return classes[keep], counts[keep]


def matched_draws(
    labels_a: np.ndarray,
    labels_b: np.ndarray,
    *,
    n_draws: int = 5,
    seed: int = 0,
    min_class_size: int = 2,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_draws`` pairs of sorted row indices into A and B (module docstring)."""
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    ca, na = _eligible(labels_a, min_class_size)
    cb, nb = _eligible(labels_b, min_class_size)
    k = min(len(ca), len(cb))
    if k < 2:
        raise ValueError(
            f"matched subsample needs at least 2 classes with >= {min_class_size} samples in "
            f"both sets; found {len(ca)} and {len(cb)}"
        )
    rows_a = {c: np.flatnonzero(labels_a == c) for c in ca}
    rows_b = {c: np.flatnonzero(labels_b == c) for c in cb}
    out = []
    for d in range(n_draws):
        rng = np.random.default_rng([seed, d])
        pick_a = rng.permutation(len(ca))[:k]
        pick_b = rng.permutation(len(cb))[:k]
        pick_a = pick_a[np.argsort(-na[pick_a], kind="stable")]
        pick_b = pick_b[np.argsort(-nb[pick_b], kind="stable")]
        sizes = np.minimum(na[pick_a], nb[pick_b])
        idx_a = [rng.choice(rows_a[ca[i]], size=s, replace=False) for i, s in zip(pick_a, sizes,
                                                                                  strict=True)]
        idx_b = [rng.choice(rows_b[cb[i]], size=s, replace=False) for i, s in zip(pick_b, sizes,
                                                                                  strict=True)]
        out.append((np.sort(np.concatenate(idx_a)), np.sort(np.concatenate(idx_b))))
    return out


def summarize_matched(
    table: pd.DataFrame, by: Sequence[str] | None = None, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean, standard deviation and number of draws of each metric over the draws.

    ``by`` defaults to every key column (source, split, method, run keys such as ``seed``);
    ``metrics`` to every other numeric column (``n_samples`` included: it varies by draw). Columns come out as
    ``<metric>_mean``, ``<metric>_std`` and one ``n_draws``.
    """
    per_draw = {"draw", "params", "resolved_params", "error", "runtime_s", "reduce_runtime_s",
                "selection_score", "n_grid_points", "input_dim"}
    if metrics is None:
        metrics = [c for c in table.columns
                   if c not in per_draw and c != "seed"
                   and pd.api.types.is_numeric_dtype(table[c])
                   and not pd.api.types.is_bool_dtype(table[c])]
    if by is None:
        by = [c for c in table.columns if c not in metrics and c not in per_draw]
    grouped = table.groupby(list(by), dropna=False, sort=False)
    agg = grouped[list(metrics)].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg["n_draws"] = grouped["draw"].nunique() if "draw" in table else grouped.size()
    return agg.reset_index()


#: method columns of a matched_metrics row (empty for ``kind="retrieval"`` rows)
METHOD_KEYS = ("kind", "selection_mode", "reducer", "clusterer")


def matched_summary_long(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("mean_average_precision_at_r", "precision_at_1", "ari", "ami",
                              "noise_fraction"),
    keys: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per (run ``keys``, source, split, method, metric): mean, std, n_draws.

    Also ``n_classes`` (the same in every draw) and ``per_class`` (mean samples per class).
    Rows whose metric is missing (a retrieval metric on a clustering row) are dropped.
    """
    front = [*keys, "source", "split", "models", *METHOD_KEYS]
    front = [c for c in front if c in table]
    t = table.copy()
    for c in METHOD_KEYS:
        if c in t:
            t[c] = t[c].fillna("")
    present = [m for m in metrics if m in t]
    long = t.melt(id_vars=[*front, "draw", "n_classes", "n_samples"], value_vars=present,
                  var_name="metric").dropna(subset=["value"])
    long["per_class"] = long["n_samples"] / long["n_classes"]
    out = long.groupby([*front, "metric"], sort=False, dropna=False).agg(
        mean=("value", "mean"), std=("value", "std"), n_draws=("draw", "nunique"),
        n_classes=("n_classes", "first"), per_class=("per_class", "mean")).reset_index()
    return out
