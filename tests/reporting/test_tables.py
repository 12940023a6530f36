"""Result tables: t-intervals, seed aggregation, improvements, best configuration (hand-checked)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.reporting.tables import (
    aggregate,
    best_configuration,
    clustering_methods,
    compare_configurations,
    compare_factors,
    improvement,
    metrics_long,
    resolve_headline,
    run_summary,
    t_interval,
)
from tests.reporting import clustering_metrics, keys_of, retrieval_metrics, training_history

HEADLINE = {"selection_mode": "transfer", "reducer": "pca", "clusterer": "hdbscan"}
RETRIEVAL = ["precision_at_1", "r_precision", "mean_average_precision_at_r"]
CLUSTERING = ["ari", "ami", "purity"]


def _long(values: dict[tuple[str, str, int, str], float], models: str = "unseen",
          metric: str = "mean_average_precision_at_r") -> pd.DataFrame:
    """Long metrics from ``{(model, loss, seed, source): value}`` (views front)."""
    rows = []
    for (model, loss, seed, source), v in values.items():
        rows.append({**keys_of(model, loss, "front", seed), "source": source,
                     "split": "unseen" if models == "unseen" else "test", "models": models,
                     "family": "retrieval", "metric": metric, "value": v})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- t-interval
def test_t_interval_matches_hand_computation() -> None:
    out = t_interval([1.0, 2.0, 3.0])
    assert out["n"] == 3 and out["mean"] == pytest.approx(2.0) and out["std"] == pytest.approx(1.0)
    # t_{0.975, 2} = 4.302653; s / sqrt(3) = 0.57735
    assert out["ci_half_width"] == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    assert out["ci_half_width"] == pytest.approx(2.484, abs=1e-3)
    assert out["ci_low"] == pytest.approx(2 - 2.48414, abs=1e-4)
    assert out["ci_high"] == pytest.approx(2 + 2.48414, abs=1e-4)


def test_t_interval_other_confidence_and_edge_cases() -> None:
    # 90%: t_{0.95, 3} = 2.353363, values 2,4,6,8 -> s = 2.5820, n = 4
    out = t_interval([2, 4, 6, 8], confidence=0.90)
    assert out["ci_half_width"] == pytest.approx(2.353363 * np.std([2, 4, 6, 8], ddof=1) / 2,
                                                 abs=1e-5)
    one = t_interval([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7
    assert math.isnan(one["std"]) and math.isnan(one["ci_half_width"]) and math.isnan(one["ci_low"])
    nan_dropped = t_interval([1.0, float("nan"), 3.0])
    assert nan_dropped["n"] == 2 and nan_dropped["mean"] == 2.0
    # t_{0.975, 1} = 12.7062; s = sqrt(2); /sqrt(2) -> 12.7062
    assert nan_dropped["ci_half_width"] == pytest.approx(12.7062, abs=1e-3)
    empty = t_interval([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_aggregate_counts_seeds_not_rows() -> None:
    table = pd.DataFrame({"g": ["a"] * 4 + ["b"], "seed": [0, 0, 1, 2, 0],
                          "value": [1.0, 3.0, 2.0, 3.0, 5.0]})
    out = aggregate(table, ["g"]).set_index("g")
    # seed 0 of group a is averaged first (2.0) -> values 2, 2, 3
    assert out.loc["a", "n"] == 3
    assert out.loc["a", "mean"] == pytest.approx(7 / 3)
    assert out.loc["a", "seeds"] == "0,1,2"
    assert out.loc["b", "n"] == 1 and math.isnan(out.loc["b", "ci_half_width"])


# --------------------------------------------------------------------------- comparisons
def test_configuration_comparison_mean_and_ci_over_seeds() -> None:
    long = _long({("r18", "ce", 0, "finetuned"): 1.0, ("r18", "ce", 1, "finetuned"): 2.0,
                  ("r18", "ce", 2, "finetuned"): 3.0, ("vit", "ce", 0, "finetuned"): 0.4})
    out = compare_configurations(long).set_index("model")
    assert out.loc["r18", "n_seeds"] == 3
    assert out.loc["r18", "mean"] == pytest.approx(2.0)
    assert out.loc["r18", "ci_half_width"] == pytest.approx(2.484, abs=1e-3)
    assert out.loc["vit", "n_seeds"] == 1 and math.isnan(out.loc["vit", "ci_half_width"])


def test_factor_comparison_pools_runs_per_level() -> None:
    long = _long({("r18", "ce", 0, "finetuned"): 0.2, ("r18", "arc", 0, "finetuned"): 0.4,
                  ("vit", "ce", 0, "finetuned"): 0.6})
    out = compare_factors(long)
    r18 = out[(out["factor"] == "model") & (out["level"] == "r18")].iloc[0]
    assert r18["n_runs"] == 2 and r18["n_configs"] == 2 and r18["mean"] == pytest.approx(0.3)
    ce = out[(out["factor"] == "loss") & (out["level"] == "ce")].iloc[0]
    assert ce["mean"] == pytest.approx(0.4) and ce["n_runs"] == 2
    views = out[out["factor"] == "views"]
    assert len(views) == 1 and views.iloc[0]["n_runs"] == 3


def test_improvement_absolute_and_percent() -> None:
    long = _long({("r18", "ce", 0, "baseline"): 0.2, ("r18", "ce", 0, "finetuned"): 0.5,
                  ("r18", "ce", 1, "baseline"): 0.4, ("r18", "ce", 1, "finetuned"): 0.5,
                  ("vit", "ce", 0, "baseline"): 0.0, ("vit", "ce", 0, "finetuned"): 0.3})
    out = improvement(long).set_index("model")
    r18 = out.loc["r18"]
    # seed 0: +0.3 (+150 %), seed 1: +0.1 (+25 %)
    assert r18["baseline"] == pytest.approx(0.3) and r18["finetuned"] == pytest.approx(0.5)
    assert r18["abs"] == pytest.approx(0.2) and r18["pct"] == pytest.approx(87.5)
    assert r18["n_seeds"] == 2
    # t_{0.975,1} * std([0.3, 0.1]) / sqrt(2) = 12.7062 * 0.1414 / 1.4142 = 1.27062
    assert r18["abs_ci_half_width"] == pytest.approx(1.27062, abs=1e-4)
    vit = out.loc["vit"]
    assert vit["abs"] == pytest.approx(0.3)
    assert math.isnan(vit["pct"])  # relative change from a zero baseline is undefined


def test_improvement_single_seed_percent() -> None:
    long = _long({("r18", "ce", 0, "baseline"): 0.4, ("r18", "ce", 0, "finetuned"): 0.3})
    row = improvement(long).iloc[0]
    assert row["abs"] == pytest.approx(-0.1) and row["pct"] == pytest.approx(-25.0)
    assert math.isnan(row["abs_ci_half_width"])


def test_best_configuration_choice_ties_and_separability() -> None:
    long = _long({("r18", "ce", 0, "finetuned"): 0.50, ("r18", "ce", 1, "finetuned"): 0.52,
                  ("vit", "ce", 0, "finetuned"): 0.60, ("vit", "ce", 1, "finetuned"): 0.62,
                  ("a_tie", "ce", 0, "finetuned"): 0.61})
    comparison = compare_configurations(long)
    best = best_configuration(comparison, [{"metric": "mean_average_precision_at_r",
                                            "models": "unseen"}]).iloc[0]
    # vit and a_tie both average 0.61: vit wins on more seeds
    assert best["model"] == "vit" and best["mean"] == pytest.approx(0.61)
    assert best["runner_up"].startswith("a_tie") and best["margin"] == pytest.approx(0.0)
    assert best["separable"] is False or best["separable"] == False  # noqa: E712
    assert best["n_configs"] == 3

    long2 = _long({("r18", "ce", s, "finetuned"): 0.1 + 0.001 * s for s in range(3)}
                  | {("vit", "ce", s, "finetuned"): 0.9 + 0.001 * s for s in range(3)})
    best2 = best_configuration(compare_configurations(long2),
                               [{"metric": "mean_average_precision_at_r", "models": "unseen"},
                                {"metric": "ari", "models": "unseen"}])
    assert best2.iloc[0]["model"] == "vit" and bool(best2.iloc[0]["separable"]) is True
    assert pd.isna(best2.iloc[1]["configuration"]) and best2.iloc[1]["n_configs"] == 0


def test_best_configuration_alphabetical_tie_break() -> None:
    long = _long({("zeta", "ce", 0, "finetuned"): 0.5, ("alpha", "ce", 0, "finetuned"): 0.5})
    best = best_configuration(compare_configurations(long),
                              [{"metric": "mean_average_precision_at_r"}]).iloc[0]
    assert best["model"] == "alpha"


# --------------------------------------------------------------------------- tidy + summary
def test_headline_resolution_and_fallback() -> None:
    table = clustering_metrics()
    resolved, notes = resolve_headline(table, HEADLINE)
    assert resolved == HEADLINE and notes == []
    resolved, notes = resolve_headline(table, {"selection_mode": "oracle", "reducer": "umap",
                                               "clusterer": "optics"})
    assert resolved == {"selection_mode": "transfer", "reducer": "pca", "clusterer": "hdbscan"}
    assert notes and "instead" in notes[0]
    # fallback does not depend on row order and never prefers kmeans (it gets the true k)
    subset = table[table["clusterer"] == "kmeans"].assign(clusterer="optics")
    mixed = pd.concat([table[table["clusterer"] == "kmeans"], subset])
    wanted = {"selection_mode": "internal", "reducer": "umap", "clusterer": "dbscan"}
    first, _ = resolve_headline(mixed, wanted)
    again, _ = resolve_headline(mixed.iloc[::-1], wanted)
    assert first == again == {"selection_mode": "internal", "reducer": "pca", "clusterer": "optics"}


def test_metrics_long_uses_only_the_headline_method() -> None:
    long = metrics_long(retrieval_metrics(), clustering_metrics(), HEADLINE, RETRIEVAL, CLUSTERING)
    ari = long[(long["metric"] == "ari")]
    # 2 configs x 2 seeds x 2 sources x 2 splits, one method only (kmeans rows are +0.05)
    assert len(ari) == 16
    row = ari[(ari["model"] == "resnet18") & (ari["seed"] == 0) & (ari["source"] == "finetuned")
              & (ari["models"] == "unseen")]
    assert row["value"].item() == pytest.approx(0.1 + 0.2)
    assert set(long["models"]) == {"val", "seen", "unseen"}
    assert not long["metric"].isin(["n_samples", "n_classes"]).any()


def test_run_summary_one_row_per_run_and_source() -> None:
    long = metrics_long(retrieval_metrics(), clustering_metrics(), HEADLINE, RETRIEVAL, CLUSTERING)
    summary = run_summary(long, training_history())
    assert len(summary) == 2 * 2 * 2  # configs x seeds x sources: no cartesian blow-up
    assert {"seen_mean_average_precision_at_r", "unseen_ari", "epochs",
            "best_val_map_at_r"} <= set(summary.columns)
    ft = summary[summary["source"] == "finetuned"]
    assert (ft["epochs"] == 3).all() and summary.loc[summary["source"] == "baseline",
                                                     "epochs"].isna().all()
    vit0 = ft[(ft["model"] == "vitb32") & (ft["seed"] == 0)].iloc[0]
    assert vit0["best_val_map_at_r"] == pytest.approx(0.41) and vit0["best_epoch"] == 3
    assert vit0["unseen_mean_average_precision_at_r"] == pytest.approx(0.2 + 0.2 + 0.1)
    assert list(summary.columns[:6]) == ["variant", "model", "loss", "views", "seed", "source"]


def test_clustering_methods_lists_every_method() -> None:
    out = clustering_methods(clustering_metrics())
    assert len(out) == 2 * 2 * 2 * 2  # sources x models x modes x clusterers (reducer pca)
    assert out["n_runs"].eq(4).all()
    assert out.loc[out["clusterer"] == "kmeans", "uses_true_k"].all()
    assert not out.loc[out["clusterer"] == "hdbscan", "uses_true_k"].any()
