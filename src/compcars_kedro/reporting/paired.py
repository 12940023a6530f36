"""Paired comparisons over replicates: best configuration chosen on val, the study's claims.

A *replicate* is one training seed (x one split seed when the grid varies it): the unit the
report counts as ``n``. Two configurations are compared on the replicates they share, as the
per-replicate difference ``a - b``: mean, Student-t interval and a paired t-test
(:func:`scipy.stats.ttest_rel`, i.e. a one-sample t-test of the differences against 0).
Overlapping intervals are never read as "not separable": only the test's p-value is.

* :func:`paired_difference`: the statistics of one set of per-replicate differences.
* :func:`best_by_val`: the configuration with the highest mean VAL metric (fine-tuned); the
  numbers quoted for it are its test (seen models) and unseen ones, and the val difference to
  the runner-up is tested (paired).
* :func:`factor_claims`: "level A beats level B" of one factor (model, loss, views), paired by
  replicate and matched on the other factors.
* :func:`clip_claims`: the CLIP layers study (vision vs text tower, best layer count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.names import FINETUNED
from compcars_kedro.reporting.tables import (
    CONFIG_KEYS,
    config_label,
    metric_label,
    paired_p_value,
    t_interval,
    with_replicate,
)

#: statistics of one paired difference, in column order
DIFF_COLUMNS = ["n", "mean_a", "mean_b", "diff", "diff_ci_low", "diff_ci_high", "p_value",
                "test", "verdict"]
CLAIM_COLUMNS = ["claim", "a", "b", "models", "metric", "n_matched_configs", *DIFF_COLUMNS,
                 "replicates", "status"]


def p_text(p: float) -> str:
    """``p = 0.012`` / ``p < 0.001`` / ``p = –`` (no test)."""
    if p is None or not np.isfinite(p):
        return "p = –"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                      alpha: float = 0.05, names: tuple[str, str] = ("A", "B")
                      ) -> dict[str, Any]:
    """Mean of ``a - b`` over paired replicates, its t-interval and a paired t-test.

    Pairs with a NaN on either side are dropped first; ``n`` counts the pairs left. With
    fewer than 2 pairs there is no interval and no test (``p_value`` NaN, verdict says so).
    The verdict names what was tested: ``"A > B (paired t-test, p = 0.012, n = 3)"``,
    ``"not separable (paired t-test, p = 0.41, n = 3)"``.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = t_interval(x - y, confidence)
    n = int(d["n"])
    p = math.nan
    if n >= 2:
        p = paired_p_value(x, y)
    if n == 0:
        verdict = "no paired replicate"
    elif n == 1:
        verdict = "one replicate: no test (run more seeds)"
    elif p < alpha:
        bigger = names[0] if d["mean"] > 0 else names[1]
        smaller = names[1] if d["mean"] > 0 else names[0]
        verdict = f"{bigger} > {smaller} (paired t-test, {p_text(p)}, n = {n})"
    else:
        verdict = f"not separable (paired t-test, {p_text(p)}, n = {n})"
    return {"n": n, "mean_a": float(x.mean()) if n else math.nan,
            "mean_b": float(y.mean()) if n else math.nan, "diff": d["mean"],
            "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"], "p_value": p,
            "test": "paired t-test" if n >= 2 else "none", "verdict": verdict}


def _per_replicate(long: pd.DataFrame, config: Mapping[str, Any], models: str, metric: str,
                   source: str) -> pd.Series:
    sel = long[(long["models"] == models) & (long["metric"] == metric)
               & (long["source"] == source)]
    for k in CONFIG_KEYS:
        sel = sel[sel[k].astype(str) == str(config[k])]
    return sel.groupby("replicate")["value"].mean()


def best_by_val(long: pd.DataFrame, comparison: pd.DataFrame, metric: str,
                source: str = FINETUNED, report_metrics: Sequence[str] = (),
                confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """The configuration with the highest mean val ``metric`` and its test / unseen numbers.

    Ranking uses ONLY the val rows (``models == "val"``) of ``source``; ties go to more
    replicates, then to the alphabetically first configuration. One row per reported
    ``(models, metric)`` of the winner (``models`` seen = test split, unseen), each with the
    selection facts: ``val_mean`` of the winner and runner-up and their paired val difference
    (``val_diff*``, ``val_p_value``, ``val_verdict``). Empty (with columns) when no
    configuration has a val value of ``metric``.
    """
    cols = ["rule", *CONFIG_KEYS, "configuration", "n_configs", "val_mean", "val_n",
            "runner_up", "runner_up_val_mean", "val_diff", "val_diff_ci_low", "val_diff_ci_high",
            "val_p_value", "val_verdict", "models", "metric", "mean", "ci_low", "ci_high", "n"]
    rule = f"highest mean val {metric_label(metric)} ({source}) over replicates"
    long = with_replicate(long)
    val = comparison[(comparison["models"] == "val") & (comparison["metric"] == metric)
                     & (comparison["source"] == source) & comparison["mean"].notna()]
    if val.empty:
        return pd.DataFrame(columns=cols)
    ranked = val.assign(_neg=-val["mean"], _negn=-val["n_seeds"]).sort_values(
        ["_neg", "_negn", *CONFIG_KEYS], kind="mergesort")
    best = ranked.iloc[0]
    head: dict[str, Any] = {"rule": rule, **{k: best[k] for k in CONFIG_KEYS},
                            "configuration": config_label(best), "n_configs": len(ranked),
                            "val_mean": best["mean"], "val_n": int(best["n_seeds"])}
    if len(ranked) > 1:
        head.update(_runner_up(long, best, ranked.iloc[1], metric, source, confidence, alpha))
    else:
        head["val_verdict"] = "single configuration: nothing to compare"
    rows = _winner_rows(comparison, best, head, source, report_metrics)
    if not rows:
        rows.append(head)
    return pd.DataFrame(rows, columns=cols)


def _runner_up(long: pd.DataFrame, best: pd.Series, second: pd.Series, metric: str, source: str,
               confidence: float, alpha: float) -> dict[str, Any]:
    """The runner-up on val and the paired val difference winner - runner-up."""
    a = _per_replicate(long, best, "val", metric, source)
    b = _per_replicate(long, second, "val", metric, source)
    shared = a.index.intersection(b.index)
    d = paired_difference(a[shared], b[shared], confidence, alpha,
                          (config_label(best), config_label(second)))
    return {"runner_up": config_label(second), "runner_up_val_mean": second["mean"],
            "val_diff": d["diff"], "val_diff_ci_low": d["diff_ci_low"],
            "val_diff_ci_high": d["diff_ci_high"], "val_p_value": d["p_value"],
            "val_verdict": d["verdict"]}


def _winner_rows(comparison: pd.DataFrame, best: pd.Series, head: Mapping[str, Any],
                 source: str, report_metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per seen / unseen x reported metric of the chosen configuration."""
    rows = []
    mine = comparison[(comparison["source"] == source)
                      & comparison["models"].isin(["seen", "unseen"])]
    for k in CONFIG_KEYS:
        mine = mine[mine[k].astype(str) == str(best[k])]
    metrics = list(report_metrics) or list(dict.fromkeys(mine["metric"]))
    for models in ("seen", "unseen"):
        for m in metrics:
            r = mine[(mine["models"] == models) & (mine["metric"] == m)]
            if r.empty:
                continue
            r = r.iloc[0]
            rows.append({**head, "models": models, "metric": m, "mean": r["mean"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": int(r["n_seeds"])})
    return rows


def _levels(values: Iterable[Any]) -> list[str]:
    return sorted({str(v) for v in values})


def factor_claims(long: pd.DataFrame, claims: Sequence[Mapping[str, Any]],
                  metrics: Sequence[str], source: str = FINETUNED, confidence: float = 0.95,
                  alpha: float = 0.05) -> pd.DataFrame:
    """Per claim x models (seen, unseen) x metric: the paired difference A - B over replicates.

    A claim is ``{name, factor, a: [levels], b: [levels]}``. Runs of a level in ``a`` are
    matched to runs of a level in ``b`` with the same other factors (``CONFIG_KEYS`` minus
    ``factor``) and the same replicate; per replicate the matched differences are averaged
    (``n_matched_configs`` of them), so ``n`` counts replicates. A claim whose runs are
    missing gets one row with ``status`` saying what is missing and no numbers.
    """
    rows = []
    long = with_replicate(long)
    reported = long[(long["source"] == source) & long["models"].isin(["seen", "unseen"])]
    for claim in claims:
        rows += _claim_rows(reported, claim, metrics, confidence, alpha)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _claim_rows(reported: pd.DataFrame, claim: Mapping[str, Any], metrics: Sequence[str],
                confidence: float, alpha: float) -> list[dict[str, Any]]:
    """The rows of one claim: one per models x metric, or one ``status`` row saying why not."""
    factor = claim["factor"]
    a_levels = {str(v) for v in claim["a"]}
    b_levels = {str(v) for v in claim["b"]}
    base = {"claim": claim["name"], "a": "+".join(sorted(a_levels)),
            "b": "+".join(sorted(b_levels))}
    have = set(_levels(reported[factor])) if not reported.empty else set()
    missing = [side for side, lv in (("A", a_levels), ("B", b_levels)) if not lv & have]
    if missing:
        return [{**base, "status": (
            f"needs runs with {factor} in {sorted(a_levels)} and in {sorted(b_levels)}; "
            f"the results have {factor} = {sorted(have) or 'none'}")}]
    others = [k for k in CONFIG_KEYS if k != factor]
    cells = _matched_cells(reported, factor, a_levels, b_levels, others)
    if cells.empty:
        return [{**base, "status": (
            f"no run of {sorted(a_levels)} shares its other settings ({', '.join(others)}) "
            f"and seed with a run of {sorted(b_levels)}")}]
    rows = []
    for models in ("seen", "unseen"):
        for metric in metrics:
            c = cells[(cells["models"] == models) & (cells["metric"] == metric)]
            if c.empty:
                continue
            per_rep = c.groupby("replicate")[["a", "b"]].mean()
            n_cfg = int(c.groupby([*others]).ngroups)
            d = paired_difference(per_rep["a"], per_rep["b"], confidence, alpha,
                                  (base["a"], base["b"]))
            rows.append({**base, "models": models, "metric": metric,
                         "n_matched_configs": n_cfg, **d,
                         "replicates": ",".join(map(str, per_rep.index)), "status": "tested"
                         if d["n"] >= 2 else "one replicate"})
    return rows


def _matched_cells(reported: pd.DataFrame, factor: str, a_levels: set[str], b_levels: set[str],
                   others: Sequence[str]) -> pd.DataFrame:
    """Mean value per models x metric x other settings x replicate of side ``a`` and ``b``
    (rows where both sides ran)."""
    sub = reported.assign(_side=np.where(reported[factor].astype(str).isin(a_levels), "a",
                                         np.where(reported[factor].astype(str).isin(b_levels),
                                                  "b", "")))
    sub = sub[sub["_side"] != ""]
    cells = (sub.groupby(["models", "metric", *others, "replicate", "_side"])["value"]
             .mean().unstack("_side"))
    if "a" not in cells or "b" not in cells:
        cells = pd.DataFrame(columns=["a", "b"])
    return cells.dropna(subset=["a", "b"]).reset_index() if len(cells) else cells


CLIP_CLAIM_METRICS = ("mean_average_precision_at_r", "ari", "zero_shot_accuracy")
NO_CLIP_TABLE = "no CLIP layers table: run `kedro run --pipelines clip_layers`"


def clip_claims(table: pd.DataFrame | None, confidence: float = 0.95, alpha: float = 0.05,
                split: str = "unseen") -> pd.DataFrame:
    """Vision vs text tower and the best layer count of the CLIP layers table, paired by seed.

    * vision vs text: matched on ``trainable_layers`` and seed; per seed the differences are
      averaged over the shared layer counts.
    * best layer count (per component): chosen on ``val_<metric>`` columns when the table has
      them, otherwise on the reported split itself (``status`` then says so: a descriptive
      choice, not a held-out one); compared with the runner-up count, paired by seed.
    """
    if table is None or len(table) == 0:
        return pd.DataFrame([{"claim": "CLIP vision tower vs text tower", "status": NO_CLIP_TABLE},
                             {"claim": "CLIP best layer count", "status": NO_CLIP_TABLE}],
                            columns=CLAIM_COLUMNS)
    t = table.copy()
    t["trainable_layers"] = pd.to_numeric(t["trainable_layers"])
    unit = "seed" if "seed" in t else None
    if unit is None:
        t["seed"] = 0
    models = str(t["models"].iloc[0]) if "models" in t else split
    metrics = [m for m in CLIP_CLAIM_METRICS if m in t and t[m].notna().any()]
    rows = _vision_text_rows(t, models, metrics, confidence, alpha)
    for component, g in t.groupby("component", sort=True):
        for metric in metrics:
            row = _best_layer_row(g, component, models, metric, confidence, alpha)
            if row is not None:
                rows.append(row)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _vision_text_rows(t: pd.DataFrame, models: str, metrics: Sequence[str], confidence: float,
                      alpha: float) -> list[dict[str, Any]]:
    """Vision minus text tower per metric, matched on layer count and seed."""
    comps = set(t["component"].astype(str))
    base = {"claim": "CLIP vision tower vs text tower", "a": "vision", "b": "text"}
    if not {"vision", "text"} <= comps:
        return [{**base, "status": f"needs both components; the table has {sorted(comps)}"}]
    rows = []
    for metric in metrics:
        w = t.pivot_table(index=["trainable_layers", "seed"], columns="component",
                          values=metric, aggfunc="mean").dropna(subset=["vision", "text"])
        if w.empty:
            continue
        per_seed = w.groupby(level="seed")[["vision", "text"]].mean()
        d = paired_difference(per_seed["vision"], per_seed["text"], confidence, alpha,
                              ("vision", "text"))
        rows.append({**base, "models": models, "metric": metric,
                     "n_matched_configs": int(w.index.get_level_values(0).nunique()), **d,
                     "replicates": ",".join(map(str, per_seed.index)),
                     "status": "tested" if d["n"] >= 2 else "one replicate"})
    return rows


def _best_layer_row(g: pd.DataFrame, component: Any, models: str, metric: str,
                    confidence: float, alpha: float) -> dict[str, Any] | None:
    """The best layer count of one component vs the runner-up (None: under two counts)."""
    val_col = f"val_{metric}"
    chooser = val_col if val_col in g and g[val_col].notna().any() else metric
    means = g.groupby("trainable_layers")[chooser].mean().dropna()
    if len(means) < 2:
        return None
    ranked = means.reset_index().sort_values([chooser, "trainable_layers"],
                                             ascending=[False, True], kind="mergesort")
    best, second = ranked["trainable_layers"].iloc[0], ranked["trainable_layers"].iloc[1]
    a = g[g["trainable_layers"] == best].groupby("seed")[metric].mean()
    b = g[g["trainable_layers"] == second].groupby("seed")[metric].mean()
    shared = a.index.intersection(b.index)
    d = paired_difference(a[shared], b[shared], confidence, alpha,
                          (f"{best:g} layers", f"{second:g} layers"))
    how = ("chosen on val" if chooser == val_col else
           f"chosen on the reported split ({models}): the table has no val column, so "
           "this choice is descriptive, not held out")
    return {"claim": f"CLIP best layer count ({component})", "a": f"{best:g}",
            "b": f"{second:g} (runner-up)", "models": models, "metric": metric,
            "n_matched_configs": 1, **d,
            "replicates": ",".join(map(str, shared)), "status": how}
