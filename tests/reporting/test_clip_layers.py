"""clip_layers_summary: Pearson r against numpy, best layer count, empty input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from compcars_kedro.reporting.clip_layers import SUMMARY_COLUMNS, clip_layers_summary, pearson_r
from compcars_kedro.reporting.paired import clip_claims
from tests.reporting import clip_layers_table


def test_pearson_r_matches_numpy_and_handles_degenerate_input() -> None:
    x = [0, 2, 4, 8, 8]
    y = [0.1, 0.3, 0.2, 0.6, 0.55]
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(pearson_r([1, 1, 1], [0.1, 0.2, 0.3]))  # constant layers
    assert math.isnan(pearson_r([1], [0.1]))
    assert pearson_r([0, 1, 2, float("nan")], [0.0, 1.0, 2.0, 5.0]) == pytest.approx(1.0)


def test_clip_layers_summary_per_component() -> None:
    table = clip_layers_table()
    summary, fig = clip_layers_summary(table)
    assert isinstance(fig, Figure)
    summary = summary.set_index("component")
    assert set(summary.index) == {"vision", "text"}
    for component in ("vision", "text"):
        sub = table[table["component"] == component]
        for metric, short in (("mean_average_precision_at_r", "map_at_r"), ("ari", "ari")):
            expected = np.corrcoef(sub["trainable_layers"], sub[metric])[0, 1]
            assert summary.loc[component, f"pearson_r_{short}"] == pytest.approx(expected)
        assert summary.loc[component, "n_runs"] == 8
        assert summary.loc[component, "layer_counts"] == "0,2,4,8"
    # vision MAP@R = 0.3 + 0.02 L - 0.002 L^2 (+ seed): peaks at L = 4 among {0, 2, 4, 8}
    assert summary.loc["vision", "best_layers_map_at_r"] == 4
    assert summary.loc["vision", "best_map_at_r"] == pytest.approx(0.3 + 0.08 - 0.032 + 0.005)
    # text decreases with layers: best = 0 layers; ARI of vision increases: best = 8
    assert summary.loc["text", "best_layers_map_at_r"] == 0
    assert summary.loc["vision", "best_layers_ari"] == 8
    assert summary.loc["text", "pearson_r_ari"] == pytest.approx(
        np.corrcoef(table.loc[table["component"] == "text", "trainable_layers"],
                    table.loc[table["component"] == "text", "ari"])[0, 1])


def test_clip_layers_summary_has_zero_shot_accuracy() -> None:
    """Text-tower runs cannot move image MAP@R; their zero-shot accuracy is in the summary."""
    table = pd.DataFrame({"component": "text", "trainable_layers": [0, 0, 4, 4],
                          "mean_average_precision_at_r": 0.3, "ari": 0.1,
                          "zero_shot_accuracy": [0.2, 0.3, 0.5, 0.6], "seed": [0, 1, 0, 1]})
    summary, _ = clip_layers_summary(table)
    row = summary.iloc[0]
    assert {"pearson_r_zero_shot", "best_layers_zero_shot", "best_zero_shot"} <= set(summary)
    assert row["best_layers_zero_shot"] == 4 and row["best_zero_shot"] == pytest.approx(0.55)
    assert math.isnan(row["pearson_r_map_at_r"])  # constant image metric: no correlation


def test_clip_layers_summary_ties_prefer_fewer_layers() -> None:
    table = pd.DataFrame({"component": "vision", "trainable_layers": [2, 4, 6],
                          "mean_average_precision_at_r": [0.5, 0.5, 0.4], "ari": [0.1, 0.2, 0.3],
                          "seed": 0})
    summary, _ = clip_layers_summary(table)
    assert summary.iloc[0]["best_layers_map_at_r"] == 2
    assert summary.iloc[0]["best_layers_ari"] == 6


@pytest.mark.parametrize("table", [None, pd.DataFrame()])
def test_clip_layers_summary_empty(table) -> None:
    summary, fig = clip_layers_summary(table)
    assert summary.empty and list(summary.columns) == SUMMARY_COLUMNS
    assert isinstance(fig, Figure)


def test_clip_layers_summary_rejects_a_wrong_table() -> None:
    with pytest.raises(KeyError, match="trainable_layers"):
        clip_layers_summary(pd.DataFrame({"component": ["vision"], "ari": [0.1]}))


def test_zero_shot_accuracy_is_plotted_and_summarised() -> None:
    table = clip_layers_table()
    table["zero_shot_accuracy"] = 0.1 + 0.05 * table["trainable_layers"]
    summary, fig = clip_layers_summary(table)
    assert "best_layers_zero_shot" in summary and "pearson_r_zero_shot" in summary
    assert summary.set_index("component").loc["text", "best_layers_zero_shot"] == 8
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("zero-shot accuracy") for t in titles), titles
    assert not any("zero" in c for c in clip_layers_summary(clip_layers_table())[0].columns)


def test_clip_claims_pair_by_seed_and_choose_layers_on_val_when_given() -> None:
    table = clip_layers_table()
    claims = clip_claims(table)
    vt = claims[(claims["claim"] == "CLIP vision tower vs text tower")
                & (claims["metric"] == "mean_average_precision_at_r")].iloc[0]
    assert vt["n"] == 2 and vt["n_matched_configs"] == 4  # layer counts 0, 2, 4, 8
    best = claims[claims["claim"] == "CLIP best layer count (vision)"]
    assert best["status"].str.contains("no val column").all()
    # a val column decides instead: make 0 layers the val winner
    table["val_mean_average_precision_at_r"] = -table["trainable_layers"]
    chosen = clip_claims(table)
    row = chosen[(chosen["claim"] == "CLIP best layer count (vision)")
                 & (chosen["metric"] == "mean_average_precision_at_r")].iloc[0]
    assert row["a"] == "0" and row["status"] == "chosen on val"
    assert len(clip_claims(None)) == 2 and clip_claims(None)["n"].isna().all()


def test_best_layer_count_is_chosen_on_val_when_the_table_has_val() -> None:
    """Val prefers 8 layers, the reported split prefers 4: the summary takes val's 8 and
    quotes the reported split's mean at 8; without val it says the choice is descriptive."""
    table = clip_layers_table()
    vision = table["component"] == "vision"
    table["val_mean_average_precision_at_r"] = np.where(
        vision, table["trainable_layers"] * 0.01, 0.5)
    summary = clip_layers_summary(table)[0].set_index("component")
    assert summary.loc["vision", "chosen_on_map_at_r"] == "val"
    assert summary.loc["vision", "best_layers_map_at_r"] == 8
    at8 = table[vision & (table["trainable_layers"] == 8)]["mean_average_precision_at_r"].mean()
    assert summary.loc["vision", "best_map_at_r"] == pytest.approx(at8)
    plain = clip_layers_summary(clip_layers_table())[0].set_index("component")
    assert plain.loc["vision", "chosen_on_map_at_r"] == "reported split (descriptive)"
    assert plain.loc["vision", "best_layers_map_at_r"] == 4
