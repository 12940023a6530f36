"""Seen vs unseen on matched subsamples (same number of car models, same images per model):
the summary of the clustering pipeline's matched-subsample table and its report section."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compcars_kedro.reporting import html as H
from compcars_kedro.reporting.display import config_value
from compcars_kedro.reporting.params import HeadlineParams
from compcars_kedro.reporting.tables import SPLIT_MODELS, metric_label, resolve_headline
from compcars_kedro.reporting.wording import MODELS_TEXT, mean_ci, num_or_dash, source_text

MATCHED_METRICS = ("ari", "ami", "noise_fraction", "mean_average_precision_at_r")
SUMMARY_COLUMNS = ["source", "models", "metric", "mean", "std", "n_draws", "n_classes",
                   "per_class", "method"]
#: quoted clustering method when the caller gives none: the parameters' default
DEFAULT_HEADLINE = HeadlineParams().model_dump()


def _headline_rows(t: pd.DataFrame, headline: Mapping[str, str]) -> pd.DataFrame:
    """Rows of the headline method; rows without a method (retrieval) are kept."""
    keep = pd.Series(True, index=t.index)
    for key in ("selection_mode", "reducer", "clusterer"):
        if key in t:
            blank = t[key].isna() | (t[key].astype(str) == "")
            keep &= blank | (t[key] == headline[key])
    return t[keep]


def matched_summary(matched: pd.DataFrame | None, headline: Mapping[str, str],
                    metrics: Sequence[str] = MATCHED_METRICS) -> pd.DataFrame:
    """Mean and std over draws per source x models x metric of a matched-subsample table.

    Accepts the per-draw table of the clustering pipeline (``draw``, ``kind`` = retrieval |
    clustering, method columns, one column per metric; clustering rows are reduced to the
    headline method) or an already summarised long table (``source, split|models, metric,
    mean, std, n_draws, n_classes, per_class``). Output: ``source, models, metric, mean, std,
    n_draws, n_classes, per_class``.
    """
    cols = SUMMARY_COLUMNS
    if matched is None or len(matched) == 0:
        return pd.DataFrame(columns=cols)
    m = matched.copy()
    if "models" not in m and "split" in m:
        m["models"] = m["split"].map(SPLIT_MODELS).fillna(m["split"])
    if "metric" in m and "mean" in m:  # already summarised (e.g. matched_summary_long)
        m = _headline_rows(m, headline)
        for c in cols:
            if c not in m:
                m[c] = math.nan
        return m[cols]
    if "kind" in m and {"selection_mode", "reducer", "clusterer"} <= set(m.columns):
        cl = m[m["kind"] == "clustering"]
        if len(cl) and not (_headline_rows(cl, headline).shape[0]):  # e.g. matched.reducers: [pca]
            headline, _ = resolve_headline(cl, dict(headline))
            m = m.assign(matched_method=f"{headline['clusterer']} on {headline['reducer']}, "
                                        f"{headline['selection_mode']} selection")
    m = _headline_rows(m, headline)
    if "n_samples" in m and "n_classes" in m:
        m["per_class"] = m["n_samples"] / m["n_classes"].where(m["n_classes"] > 0)
    return _summarise_draws(m, metrics)


def _summarise_draws(m: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per-draw rows -> one row per source x models x metric (mean, std over draws)."""
    present = [x for x in metrics if x in m]
    long = m.melt(id_vars=[c for c in ("source", "models", "draw", "seed", "n_classes",
                                       "per_class", "matched_method") if c in m],
                  value_vars=present, var_name="metric", value_name="value").dropna(
        subset=["value"])
    rows = []
    for (source, models, metric), g in long.groupby(["source", "models", "metric"], sort=False):
        draws = g[[c for c in ("draw", "seed") if c in g]].drop_duplicates()
        method = g["matched_method"].iloc[0] if "matched_method" in g else ""
        rows.append({"source": source, "models": models, "metric": metric, "method": method,
                     "mean": float(g["value"].mean()),
                     "std": float(g["value"].std(ddof=1)) if len(g) > 1 else math.nan,
                     "n_draws": len(draws),
                     "n_classes": g["n_classes"].median() if "n_classes" in g else math.nan,
                     "per_class": g["per_class"].median() if "per_class" in g else math.nan})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


MATCHED_TEXT = ("Seen and unseen scored on subsamples with the same number of car models and "
                "the same images per model, over several seeded draws (matched = mean ± std "
                "over draws; full = the whole split, as in the answer): what remains of the gap "
                "is not a size effect.")


def matched_section(matched: pd.DataFrame | None, comparison: pd.DataFrame | None = None,
                    config: Mapping[str, Any] | None = None,
                    headline: Mapping[str, str] | None = None) -> str:
    """Seen vs unseen on matched subsamples (same number of classes, same per-class count),
    next to the full-split numbers of the same configuration; absent or empty -> one line."""
    summary = matched_summary(matched, headline or DEFAULT_HEADLINE)
    if summary.empty:
        return H.note("no matched-subsample table in this run: the seen vs unseen numbers "
                      "above come from splits of different sizes")
    full = comparison if comparison is not None and config is not None \
        and not comparison.empty else None
    rows = [_matched_row(g, models, source, full, config)
            for (models, source), g in summary.groupby(["models", "source"], sort=False)]
    methods = {x for x in summary["method"].dropna() if x}
    text = MATCHED_TEXT
    if methods:
        text += (f" The matched table has no row of the quoted clustering method; its clustering "
                 f"columns use {', '.join(sorted(methods))} (full columns: the quoted method).")
    return H.paragraph(text) + H.table(pd.DataFrame(rows), table_id="matched-table")


def _matched_row(g: pd.DataFrame, models: str, source: str, comparison: pd.DataFrame | None,
                 config: Mapping[str, Any] | None) -> dict[str, Any]:
    """One models x source row: ``<metric> matched`` (and ``<metric> full``) cells, counts."""
    row: dict[str, Any] = {"models": MODELS_TEXT.get(models, models),
                           "source": source_text(source)}
    for _, r in g.iterrows():
        label = metric_label(r["metric"])
        row[f"{label} matched"] = mean_ci(r["mean"], r["std"])
        if comparison is not None:
            row[f"{label} full"] = num_or_dash(
                config_value(comparison, config, models, source, r["metric"]))
    row.update({"draws": int(g["n_draws"].max()),
                "classes": _count(g["n_classes"].max()),
                "per class": _count(g["per_class"].max())})
    return row


def _count(value: float) -> Any:
    """A count as an int (a median of counts may be fractional: then 3 significant digits)."""
    if pd.isna(value):
        return math.nan
    return int(value) if float(value).is_integer() else float(value)
