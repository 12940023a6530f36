"""Display tables of the report: the results tables reshaped for reading (wide, human column
names, ``mean ± half width`` or ``mean [CI]`` cells). The full numbers stay in the CSV tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compcars_kedro.names import BASELINE, FINETUNED, SOURCES
from compcars_kedro.reporting.paired import p_text
from compcars_kedro.reporting.tables import CONFIG_KEYS, RUN_KEYS, metric_label
from compcars_kedro.reporting.wording import (
    MODELS_TEXT,
    humanize,
    interval,
    mean_ci,
    num,
)


def configs_of(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The distinct configurations (model, loss, views) of the run summary."""
    rs = tables["run_summary"]
    return rs[list(CONFIG_KEYS)].drop_duplicates() if not rs.empty else pd.DataFrame()


def of_config(table: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of ``table`` of configuration ``config`` (keys compared as text)."""
    for k in CONFIG_KEYS:
        table = table[table[k].astype(str) == str(config[k])]
    return table


def config_value(comparison: pd.DataFrame, config: Mapping[str, Any], models: str, source: str,
                 metric: str) -> float:
    """Mean of ``metric`` for ``config`` x ``models`` x ``source`` (NaN when absent)."""
    c = comparison[(comparison["models"] == models) & (comparison["source"] == source)
                   & (comparison["metric"] == metric)]
    c = of_config(c, config)
    return float(c["mean"].iloc[0]) if len(c) else math.nan


def _p_cell(value: float) -> str:
    return p_text(value).removeprefix("p = ").removeprefix("p ")


def comparison_display(comparison: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                       n_col: str = "n_seeds") -> pd.DataFrame:
    """Wide, readable view: one row per ``by`` + source + models, ``mean ± half width`` cells."""
    if comparison.empty:
        return pd.DataFrame()
    c = comparison[comparison["metric"].isin(metrics)
                   & comparison["models"].isin(["seen", "unseen"])].copy()
    if c.empty:
        return pd.DataFrame()
    c["cell"] = [mean_ci(m, h) for m, h in zip(c["mean"], c["ci_half_width"], strict=True)]
    idx = [*by, "source", "models"]
    wide = c.pivot_table(index=idx, columns="metric", values="cell", aggfunc="first")
    wide = wide[[m for m in metrics if m in wide.columns]]
    wide.columns = [metric_label(m) for m in wide.columns]
    n = c.groupby(idx)[n_col].max().rename(n_col)
    return humanize(wide.join(n).reset_index())


def improvement_display(improvement: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    if improvement.empty:
        return pd.DataFrame()
    i = improvement[improvement["metric"].isin(metrics)].copy()
    i["metric"] = i["metric"].map(metric_label)
    i["change"] = [mean_ci(a, h) for a, h in zip(i["abs"], i["abs_ci_half_width"], strict=True)]
    i["change %"] = [mean_ci(a, h, 2) for a, h in zip(i["pct"], i["pct_ci_half_width"],
                                                      strict=True)]
    p = i["p_value"] if "p_value" in i else pd.Series(math.nan, index=i.index)
    i["p (paired t)"] = [_p_cell(v) for v in p]
    cols = [*CONFIG_KEYS, "models", "metric", "n_seeds", BASELINE, FINETUNED, "change",
            "p (paired t)", "change %"]
    return humanize(i[cols].rename(columns={FINETUNED: "fine-tuned"}))


def headline_table(comparison: pd.DataFrame, config: Mapping[str, Any] | None) -> pd.DataFrame:
    """Seen and unseen x baseline and fine-tuned: ARI, AMI (each with the noise fraction) and
    MAP@R, each ``mean [CI]``, and ``n`` (replicates)."""
    cols = ["models", "source", "ARI", "AMI", "noise fraction", "MAP@R", "n"]
    if comparison.empty or config is None:
        return pd.DataFrame(columns=cols)
    c = of_config(comparison, config)
    rows = []
    for models in ("seen", "unseen"):
        for source in SOURCES:
            sel = c[(c["models"] == models) & (c["source"] == source)].set_index("metric")
            if not sel.empty:
                rows.append(_headline_row(sel, models, source))
    return pd.DataFrame(rows, columns=cols)


def _headline_row(sel: pd.DataFrame, models: str, source: str) -> dict[str, Any]:
    def cell(metric: str) -> str:
        if metric not in sel.index:
            return "–"
        r = sel.loc[metric]
        return interval(r["mean"], r["ci_low"], r["ci_high"])

    return {"models": MODELS_TEXT[models],
            "source": "fine-tuned" if source == FINETUNED else BASELINE,
            "ARI": cell("ari"), "AMI": cell("ami"), "noise fraction": cell("noise_fraction"),
            "MAP@R": cell("mean_average_precision_at_r"), "n": int(sel["n_seeds"].max())}


def claims_lines(claims: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """One line per claim that could not be tested, and the display table of the others."""
    if claims is None or claims.empty:
        return [], pd.DataFrame()
    lines = []
    tested = claims[claims["status"].notna() & claims["n"].notna()] if "n" in claims else \
        claims.iloc[0:0]
    for name, g in claims.groupby("claim", sort=False):
        if g["n"].isna().all():
            lines.append(f"{name}: {g['status'].iloc[0]}")
    if tested.empty:
        return lines, pd.DataFrame()
    t = tested.copy()
    t["models"] = t["models"].map(lambda m: MODELS_TEXT.get(m, m))
    t["A − B [CI]"] = [interval(d, lo, hi) for d, lo, hi in
                       zip(t["diff"], t["diff_ci_low"], t["diff_ci_high"], strict=True)]
    t["p_value"] = [_p_cell(v) for v in t["p_value"]]
    cols = ["claim", "a", "b", "models", "metric", "n", "mean_a", "mean_b", "A − B [CI]",
            "p_value", "verdict", "n_matched_configs", "status"]
    return lines, humanize(t[cols])


def best_display(best: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The selection sentence and the chosen configuration's test / unseen numbers."""
    if best is None or best.empty or pd.isna(best["configuration"].iloc[0]):
        return "", pd.DataFrame()
    text = _best_text(best.iloc[0])
    rows = best[best["models"].notna()].copy()
    if rows.empty:
        return text, pd.DataFrame()
    rows["models"] = rows["models"].map(lambda m: MODELS_TEXT.get(m, m))
    rows["cell"] = [interval(m, lo, hi) for m, lo, hi in
                    zip(rows["mean"], rows["ci_low"], rows["ci_high"], strict=True)]
    order = list(dict.fromkeys(rows["metric"]))
    wide = rows.pivot_table(index="models", columns="metric", values="cell", aggfunc="first",
                            sort=False)[order]
    wide.columns = [metric_label(m) for m in wide.columns]
    wide = wide.join(rows.groupby("models")["n"].max()).reset_index()
    return text, humanize(wide)


def _best_text(b: pd.Series) -> str:
    text = (f"{b['configuration']} was chosen by the {b['rule']}: val {num(b['val_mean'])} "
            f"(n = {int(b['val_n'])}) among {int(b['n_configs'])} configurations.")
    if isinstance(b.get("runner_up"), str):
        text += (f" Runner-up on val: {b['runner_up']} ({num(b['runner_up_val_mean'])}); "
                 f"val difference {interval(b['val_diff'], b['val_diff_ci_low'], b['val_diff_ci_high'])}"
                 f", {b['val_verdict']}.")
    return text + " The numbers below are the chosen configuration's test and unseen results."


def runs_table(run_summary: pd.DataFrame) -> pd.DataFrame:
    """Per-run summary: fewer, human columns (all numbers are in run_summary.csv)."""
    if run_summary.empty:
        return run_summary
    keep = [c for c in run_summary.columns
            if c in (*RUN_KEYS, "source", "split_seed", "epochs", "best_epoch",
                     "best_val_map_at_r", "train_time_s")
            or any(c == f"{m}_{metric}" for m in ("seen", "unseen")
                   for metric in ("ari", "ami", "noise_fraction", "mean_average_precision_at_r",
                                  "precision_at_1"))]
    return humanize(run_summary[keep].drop(columns=["variant"], errors="ignore"))


def seeds_table(run_summary: pd.DataFrame) -> pd.DataFrame:
    """Configurations and the training seeds each ran with."""
    if run_summary.empty:
        return pd.DataFrame()
    runs = run_summary[list(RUN_KEYS)].drop_duplicates()
    return humanize(runs.groupby(list(CONFIG_KEYS))["seed"]
                    .agg(n_seeds="nunique", seeds=lambda s: ", ".join(str(v) for v in sorted(set(s))))
                    .reset_index())


def methods_display(methods: pd.DataFrame) -> pd.DataFrame:
    if methods.empty:
        return methods
    out = methods.drop(columns=["uses_true_k"], errors="ignore")
    out = out.assign(models=out["models"].map(lambda m: MODELS_TEXT.get(m, m)))
    return humanize(out)


SPLIT_ROLES = {"train": "training", "val": "early stopping + choices (seen models)",
               "test": "reported: seen models", "unseen": "reported: unseen (held-out) models"}


def split_table(split_summary: Mapping[str, Any] | None) -> pd.DataFrame:
    """One row per split: images, car models, view pairs, unpaired images and its role."""
    if not split_summary:
        return pd.DataFrame()
    images = split_summary.get("images_per_split", {})
    classes = split_summary.get("classes_per_split", {})
    pairs = split_summary.get("pairs_per_split", {})
    splits = list(dict.fromkeys([*images, *classes, *pairs]))
    unpaired = split_summary.get("unpaired_per_split") or {}
    rows = []
    for s in splits:
        row = {"split": s, "images": images.get(s), "car models": classes.get(s),
               "samples (view pairs)": pairs.get(s)}
        if unpaired:
            left = unpaired.get(s) or {}
            row["unpaired images"] = (", ".join(f"{v} {n}" for v, n in left.items())
                                      if isinstance(left, Mapping) else left)
        row["role"] = SPLIT_ROLES.get(s, "")
        rows.append(row)
    return pd.DataFrame(rows)
