"""Result tables: t-intervals, seed aggregation, improvements, best configuration (hand-checked)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.reporting.paired import best_by_val, factor_claims, paired_difference
from compcars_kedro.reporting.tables import (
    aggregate,
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


SPLIT_OF = {"unseen": "unseen", "seen": "test", "val": "val"}


def _long(values: dict[tuple[str, str, int, str], float], models: str = "unseen",
          metric: str = "mean_average_precision_at_r", views: str = "front") -> pd.DataFrame:
    """Long metrics from ``{(model, loss, seed, source): value}``."""
    rows = []
    for (model, loss, seed, source), v in values.items():
        rows.append({**keys_of(model, loss, views, seed), "source": source,
                     "split": SPLIT_OF[models], "models": models,
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


def test_improvement_percent_only_for_directed_metrics_above_epsilon() -> None:
    ari = _long({("r18", "ce", 0, "baseline"): 0.005, ("r18", "ce", 0, "finetuned"): 0.3,
                 ("vit", "ce", 0, "baseline"): 0.2, ("vit", "ce", 0, "finetuned"): 0.3},
                metric="ari")
    count = _long({("r18", "ce", 0, "baseline"): 4.0, ("r18", "ce", 0, "finetuned"): 8.0},
                  metric="n_clusters")
    out = improvement(pd.concat([ari, count]), epsilon=0.01).set_index(["model", "metric"])
    assert math.isnan(out.loc[("r18", "ari"), "pct"])  # baseline 0.005 < epsilon
    assert out.loc[("r18", "ari"), "abs"] == pytest.approx(0.295)
    assert out.loc[("vit", "ari"), "pct"] == pytest.approx(50.0)
    assert math.isnan(out.loc[("r18", "n_clusters"), "pct"])  # a count has no direction


def test_improvement_paired_p_value() -> None:
    long = _long({("r18", "ce", s, src): v for s, (b, f) in enumerate([(0.2, 0.5), (0.3, 0.5),
                                                                       (0.25, 0.45)])
                  for src, v in (("baseline", b), ("finetuned", f))})
    row = improvement(long).iloc[0]
    # differences 0.3, 0.2, 0.2 -> t = 0.2333 / (0.0577 / sqrt 3) = 7.0, df 2 -> p = 0.0198
    assert row["p_value"] == pytest.approx(0.0198, abs=2e-4)
    assert row["n_seeds"] == 3


# --------------------------------------------------------------------------- paired, best on val
def test_paired_difference_t_test_and_verdict() -> None:
    out = paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.6], names=("A", "B"))
    # differences 0.1, 0.2, 0.1: mean 0.1333, s 0.0577, t 4.0, df 2 -> p 0.0572
    assert out["n"] == 3 and out["diff"] == pytest.approx(0.13333, abs=1e-4)
    assert out["p_value"] == pytest.approx(0.0572, abs=5e-4)
    assert out["verdict"].startswith("not separable (paired t-test, p = 0.057, n = 3)")
    big = paired_difference([0.9, 0.8, 0.85, 0.95], [0.1, 0.2, 0.1, 0.15], names=("A", "B"))
    assert big["verdict"].startswith("A > B (paired t-test") and big["p_value"] < 0.001
    one = paired_difference([0.5], [0.4])
    assert one["n"] == 1 and math.isnan(one["p_value"]) and "no test" in one["verdict"]
    # a NaN on either side drops the pair
    assert paired_difference([0.5, math.nan, 0.7], [0.4, 0.1, 0.5])["n"] == 2


def _val_test_disagree() -> pd.DataFrame:
    """Config ``good_val`` wins on val, ``good_test`` wins on test and unseen."""
    parts = []
    for models, good_val, good_test in (("val", 0.6, 0.4), ("seen", 0.3, 0.7),
                                        ("unseen", 0.2, 0.5)):
        parts.append(_long({("good_val", "ce", s, "finetuned"): good_val + 0.01 * s
                            for s in range(3)}
                           | {("good_test", "ce", s, "finetuned"): good_test + 0.02 * s
                              for s in range(3)}, models=models))
    return pd.concat(parts, ignore_index=True)


def test_best_configuration_is_chosen_on_val_not_on_test() -> None:
    long = _val_test_disagree()
    comparison = compare_configurations(long)
    best = best_by_val(long, comparison, "mean_average_precision_at_r")
    assert set(best["model"]) == {"good_val"}  # the val winner, although test says otherwise
    assert best["val_mean"].iloc[0] == pytest.approx(0.61)
    assert best["runner_up"].iloc[0].startswith("good_test")
    # quoted numbers are the chosen configuration's test (seen) and unseen ones
    quoted = best.set_index("models")["mean"]
    assert quoted["seen"] == pytest.approx(0.31) and quoted["unseen"] == pytest.approx(0.21)
    assert best["n"].eq(3).all() and best["rule"].iloc[0].startswith("highest mean val MAP@R")
    # val difference 0.6+0.01s - (0.4+0.02s): 0.2, 0.19, 0.18, paired t-test over 3 seeds
    assert best["val_diff"].iloc[0] == pytest.approx(0.19)
    assert "paired t-test" in best["val_verdict"].iloc[0] and "n = 3" in best["val_verdict"].iloc[0]


def test_best_configuration_ties_and_no_val() -> None:
    long = _long({("zeta", "ce", 0, "finetuned"): 0.5, ("alpha", "ce", 0, "finetuned"): 0.5},
                 models="val")
    best = best_by_val(long, compare_configurations(long), "mean_average_precision_at_r")
    assert best["model"].iloc[0] == "alpha"  # alphabetical tie break
    assert "one replicate" in best["val_verdict"].iloc[0]
    no_val = _long({("zeta", "ce", 0, "finetuned"): 0.5})
    assert best_by_val(no_val, compare_configurations(no_val), "mean_average_precision_at_r").empty


def test_factor_claim_paired_by_seed_and_matched_on_other_factors() -> None:
    # views claim: front+rear vs front, matched on (model, loss) and seed
    fr = _long({("r18", "ce", s, "finetuned"): 0.5 + 0.1 * s for s in range(3)}
               | {("vit", "ce", s, "finetuned"): 0.3 for s in range(3)}, views="front+rear")
    f = _long({("r18", "ce", s, "finetuned"): 0.4 + 0.1 * s for s in range(3)}
              | {("vit", "ce", s, "finetuned"): 0.3 for s in range(3)}
              | {("vit", "arc", 0, "finetuned"): 0.9}, views="front")  # unmatched: ignored
    claims = [{"name": "front+rear vs front", "factor": "views", "a": ["front+rear"],
               "b": ["front"]},
              {"name": "ResNet50 vs ViT-B/32", "factor": "model", "a": ["resnet50"],
               "b": ["vit"]}]
    out = factor_claims(pd.concat([fr, f]), claims, ["mean_average_precision_at_r"])
    row = out[out["claim"] == "front+rear vs front"].iloc[0]
    # per seed: mean over (r18: +0.1, vit: 0) = 0.05 -> constant difference, 3 seeds
    assert row["n"] == 3 and row["n_matched_configs"] == 2
    assert row["diff"] == pytest.approx(0.05) and row["models"] == "unseen"
    missing = out[out["claim"] == "ResNet50 vs ViT-B/32"]
    assert len(missing) == 1 and pd.isna(missing["n"].iloc[0])
    assert "resnet50" in missing["status"].iloc[0]


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


def test_nmi_is_not_a_headline_column() -> None:
    from compcars_kedro.reporting import builders
    from compcars_kedro.reporting.display import headline_table
    from compcars_kedro.reporting.params import reporting_params

    assert "nmi" not in reporting_params({}).metrics.clustering
    tables, _ = builders.build_tables(training_history(), retrieval_metrics(),
                                      clustering_metrics(), {"headline": HEADLINE})
    assert "nmi" not in set(tables["metrics_long"]["metric"])
    assert not any("nmi" in c for c in tables["run_summary"].columns)
    table = headline_table(tables["comparison"], dict(model="vitb32", loss="ce",
                                                      views="front+rear"))
    assert list(table.columns) == ["models", "source", "ARI", "AMI", "noise fraction", "MAP@R",
                                   "n"]
    assert len(table) == 4  # seen / unseen x baseline / fine-tuned


def test_clustering_methods_lists_every_method() -> None:
    out = clustering_methods(clustering_metrics())
    assert len(out) == 2 * 2 * 2 * 2  # sources x models x modes x clusterers (reducer pca)
    assert out["n_runs"].eq(4).all()
    assert out.loc[out["clusterer"] == "kmeans", "uses_true_k"].all()
    assert not out.loc[out["clusterer"] == "hdbscan", "uses_true_k"].any()
    assert out.loc[out["clusterer"] == "kmeans", "label"].str.startswith("reference").all()
    assert out.loc[out["clusterer"] == "hdbscan", "label"].eq("").all()
