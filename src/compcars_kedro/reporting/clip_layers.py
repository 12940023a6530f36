"""CLIP partial fine-tuning: metric vs number of trainable layers, per component (vision, text).

Input: one row per run with ``component`` (``vision`` | ``text``), ``trainable_layers`` and the
metrics ``mean_average_precision_at_r``, ``ari`` and, for image-text runs, ``zero_shot_accuracy``
(the only one of the three the text tower can move) (plus run keys such as ``seed``; an optional
``models`` column, seen / unseen, splits the analysis). ``trainable_layers = 0`` is the control:
only the tower's final norm and projection train.

* Pearson r is computed over the runs themselves (every seed a point), between
  ``trainable_layers`` and each metric; NaN when either is constant or fewer than 2 runs.
* The best layer count of a component is the one with the highest MEAN metric over seeds
  (ties go to fewer layers: cheaper to train), chosen on the table's ``val_<metric>`` column
  when it has one (``chosen_on_<metric> = "val"``); ``best_<metric>`` is then the reported
  split's mean at that count. Without a val column the choice is made on the reported split
  itself and labelled ``"reported split (descriptive)"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from compcars_kedro.reporting.figures import clip_layers_figure, placeholder_figure
from compcars_kedro.reporting.tables import aggregate

#: metrics of the study; ``zero_shot_accuracy`` (image-text runs) is the text tower's own score
CLIP_METRICS: tuple[str, ...] = ("mean_average_precision_at_r", "ari", "zero_shot_accuracy")
SHORT = {"mean_average_precision_at_r": "map_at_r", "ari": "ari",
         "zero_shot_accuracy": "zero_shot"}
SUMMARY_COLUMNS = ["component", "n_runs", "layer_counts",
                   *[f"{c}_{SHORT[m]}" for m in CLIP_METRICS
                     for c in ("pearson_r", "best_layers", "best", "chosen_on")]]


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the finite pairs of ``x`` and ``y`` (NaN if undefined)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _groups(table: pd.DataFrame) -> list[str]:
    return ["component", "models"] if "models" in table.columns else ["component"]


def clip_layers_points(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean +/- t-interval over seeds per (component[, models], trainable_layers, metric)."""
    groups = _groups(table)
    long = table.melt(id_vars=[c for c in table.columns if c not in CLIP_METRICS],
                      value_vars=[m for m in CLIP_METRICS if m in table], var_name="metric",
                      value_name="value")
    unit = "seed" if "seed" in long else "_row"
    if unit == "_row":
        long["_row"] = np.arange(len(long))
    out = aggregate(long, [*groups, "trainable_layers", "metric"], confidence=confidence,
                    unit=unit)
    return out.drop(columns=[f"{unit}s"])


def clip_layers_summary(table: pd.DataFrame | None, confidence: float = 0.95
                        ) -> tuple[pd.DataFrame, Figure]:
    """``(summary, figure)``: Pearson r and best layer count per component, and the curves.

    An empty or missing table gives an empty summary (columns kept) and a placeholder figure.
    """
    if table is None or len(table) == 0:
        return (pd.DataFrame(columns=SUMMARY_COLUMNS),
                placeholder_figure("no clip_layers table: the CLIP layers study was not run"))
    missing = {"component", "trainable_layers"} - set(table.columns)
    metrics = [m for m in CLIP_METRICS if m in table.columns and table[m].notna().any()]
    if missing or not metrics:
        raise KeyError(f"clip_layers table needs component, trainable_layers and one of "
                       f"{list(CLIP_METRICS)}; missing {sorted(missing) or list(CLIP_METRICS)}")
    table = table.copy()
    table["trainable_layers"] = pd.to_numeric(table["trainable_layers"])
    points = clip_layers_points(table, confidence)
    groups = _groups(table)
    rows = []
    for key, g in table.groupby(groups, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append(_summary_row(g, dict(zip(groups, key, strict=True)), metrics, points))
    summary = pd.DataFrame(rows)
    summary = summary[[*groups, *[c for c in SUMMARY_COLUMNS
                                  if c != "component" and c in summary]]]
    plot_points = points.copy()
    if "models" in plot_points:
        plot_points["component"] = plot_points["component"].astype(str) + " (" + \
            plot_points["models"].astype(str) + ")"
    return summary, clip_layers_figure(plot_points, metrics)


def _summary_row(g: pd.DataFrame, group: dict[str, Any], metrics: Sequence[str],
                 points: pd.DataFrame) -> dict[str, Any]:
    """One component's (and models') row: run count, layer counts, then per metric Pearson r
    and the best layer count (chosen on val when the table has ``val_<metric>``)."""
    row = {**group, "n_runs": len(g),
           "layer_counts": ",".join(str(int(v)) for v in sorted(g["trainable_layers"].unique()))}
    for metric in metrics:
        short = SHORT[metric]
        row[f"pearson_r_{short}"] = pearson_r(g["trainable_layers"], g[metric])
        p = points[(points["metric"] == metric)]
        for col, value in group.items():
            p = p[p[col] == value]
        p = p[p["mean"].notna()]
        val_col = f"val_{metric}"
        if val_col in g and g[val_col].notna().any():
            chooser = (g.groupby("trainable_layers")[val_col].mean().rename("choose")
                       .reset_index())
            p = p.merge(chooser, on="trainable_layers", how="left")
            row[f"chosen_on_{short}"] = "val"
        else:
            p = p.assign(choose=p["mean"])
            row[f"chosen_on_{short}"] = "reported split (descriptive)"
        p = p[p["choose"].notna()].sort_values(["choose", "trainable_layers"],
                                               ascending=[False, True], kind="mergesort")
        row[f"best_layers_{short}"] = int(p["trainable_layers"].iloc[0]) if len(p) else math.nan
        row[f"best_{short}"] = float(p["mean"].iloc[0]) if len(p) else math.nan
    return row
