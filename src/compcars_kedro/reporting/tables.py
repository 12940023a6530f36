"""Result tables: tidy metrics, per-run summary, seed aggregates with t-intervals, improvements.

Conventions
-----------
* Every input table carries the run keys ``variant, model, loss, views, seed`` (one run = one
  configuration ``(model, loss, views)`` trained with one seed). Tables of several runs are
  simply concatenated; nothing here assumes a single run.
* ``models`` says which car models a number is about: ``seen`` = the ``test`` split (models
  trained on, images never seen), ``unseen`` = models held out of training entirely.
* Aggregates over seeds report ``mean``, the sample standard deviation (``ddof=1``) and the
  two-sided Student-t interval ``mean +/- t_{(1+c)/2, n-1} * s / sqrt(n)`` (``c`` = confidence,
  0.95 by default). NaN values (e.g. a retrieval metric undefined on a split where every class
  has one sample) are dropped before counting ``n``. With ``n = 1`` the interval is NaN: one
  seed says nothing about seed variance.
* Clustering numbers come from ONE method, the *headline* ``(selection_mode, reducer,
  clusterer)`` (see :func:`resolve_headline`); oracle rows are never used unless asked for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

RUN_KEYS: tuple[str, ...] = ("variant", "model", "loss", "views", "seed")
CONFIG_KEYS: tuple[str, ...] = ("model", "loss", "views")
FACTORS: tuple[str, ...] = ("model", "loss", "views")
#: retrieval split -> which models it measures (val only tunes; it is kept as ``val``)
SPLIT_MODELS = {"test": "seen", "unseen": "unseen", "val": "val"}
MODE_ORDER = ("transfer", "internal", "oracle")

METRIC_LABELS = {
    "precision_at_1": "P@1",
    "r_precision": "R-precision",
    "mean_average_precision_at_r": "MAP@R",
    "ari": "ARI",
    "ami": "AMI",
    "nmi": "NMI",
    "purity": "purity",
    "pct_pure_clusters": "% pure clusters",
    "pct_dominant_clusters": "% dominant clusters",
    "n_clusters": "# clusters",
    "noise_fraction": "noise fraction",
    "accuracy": "accuracy",
}

LONG_COLUMNS = [*RUN_KEYS, "source", "split", "models", "family", "metric", "value"]
AGG_COLUMNS = ["n", "mean", "std", "ci_half_width", "ci_low", "ci_high"]


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def config_label(row: pd.Series | dict[str, Any]) -> str:
    """``model / loss / views`` of a row (the name of a configuration in tables and figures)."""
    return f"{row['model']} / {row['loss']} / {row['views']}"


# --------------------------------------------------------------------------- statistics
def t_interval(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample std and the Student-t ``confidence`` interval of ``values`` (NaN dropped).

    ``[1, 2, 3]`` -> mean 2, std 1, half width ``t_{0.975, 2} / sqrt(3) = 2.484``.
    One value -> std and interval NaN; no value -> everything NaN and ``n = 0``.
    """
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n))
    else:
        std = half = math.nan
    return {"n": n, "mean": mean, "std": std, "ci_half_width": half,
            "ci_low": mean - half, "ci_high": mean + half}


def aggregate(table: pd.DataFrame, by: Sequence[str], value: str = "value",
              confidence: float = 0.95, unit: str = "seed") -> pd.DataFrame:
    """Group ``table`` by ``by`` and summarise ``value`` with :func:`t_interval`.

    Rows sharing ``by`` + ``unit`` (e.g. two rows of one seed) are averaged first, so ``n``
    counts units (seeds), never rows. Adds ``units``: the sorted unit values that count.
    """
    by = list(by)
    if table.empty:
        return pd.DataFrame(columns=[*by, *AGG_COLUMNS, f"{unit}s"])
    per_unit = table.groupby([*by, unit], dropna=False, sort=True)[value].mean().reset_index()
    rows = []
    for key, group in per_unit.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        valid = group.loc[group[value].notna(), unit]
        rows.append({**dict(zip(by, key, strict=True)),
                     **t_interval(group[value], confidence),
                     f"{unit}s": ",".join(str(u) for u in sorted(valid.tolist()))})
    return pd.DataFrame(rows, columns=[*by, *AGG_COLUMNS, f"{unit}s"])


# --------------------------------------------------------------------------- headline method
def _prefer(wanted: str, available: Iterable[str], avoid: Sequence[str] = ()) -> str:
    """``wanted`` if available, else the alphabetically first (names in ``avoid`` last)."""
    names = sorted(set(available), key=lambda n: (n in avoid, n))
    return wanted if wanted in names else names[0]


def resolve_headline(clustering: pd.DataFrame, wanted: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The ``(selection_mode, reducer, clusterer)`` to report, and notes on any fallback.

    Uses ``wanted`` when the clustering table has it. Otherwise, independently of row order:
    the wanted mode if present, else transfer, internal, then oracle; then the wanted reducer /
    clusterer if present for that mode, else the alphabetically first one (kmeans last: it is
    given the true number of models).
    """
    notes: list[str] = []
    if clustering.empty:
        return dict(wanted), ["no clustering results: clustering columns are empty"]
    modes = set(clustering["selection_mode"])
    mode = wanted["selection_mode"]
    if mode not in modes:
        mode = next((m for m in MODE_ORDER if m in modes), sorted(modes)[0])
    sub = clustering[clustering["selection_mode"] == mode]
    reducer = _prefer(wanted["reducer"], sub["reducer"])
    sub = sub[sub["reducer"] == reducer]
    clusterer = _prefer(wanted["clusterer"], sub["clusterer"], avoid=("kmeans",))
    resolved = {"selection_mode": mode, "reducer": reducer, "clusterer": clusterer}
    if resolved != dict(wanted):
        notes.append(
            "headline clustering method {selection_mode}/{reducer}/{clusterer} is not in the "
            "clustering table; reporting ".format(**wanted)
            + "{selection_mode}/{reducer}/{clusterer} instead".format(**resolved))
    return resolved, notes


# --------------------------------------------------------------------------- tidy metrics
def _keys_present(table: pd.DataFrame) -> None:
    missing = [k for k in RUN_KEYS if k not in table.columns]
    if missing:
        raise KeyError(f"table lacks run key columns {missing}")


def metrics_long(retrieval: pd.DataFrame, clustering: pd.DataFrame, headline: dict[str, str],
                 retrieval_metrics: Sequence[str], clustering_metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (run, source, split, metric): retrieval metrics + the headline clustering.

    Columns: ``variant, model, loss, views, seed, source, split, models, family, metric, value``.
    """
    parts = []
    if not retrieval.empty:
        _keys_present(retrieval)
        cols = [m for m in retrieval_metrics if m in retrieval.columns]
        r = retrieval.melt(id_vars=[*RUN_KEYS, "source", "split"], value_vars=cols,
                           var_name="metric", value_name="value")
        r["models"] = r["split"].map(SPLIT_MODELS).fillna(r["split"])
        parts.append(r.assign(family="retrieval"))
    if not clustering.empty:
        _keys_present(clustering)
        sel = clustering[(clustering["selection_mode"] == headline["selection_mode"])
                         & (clustering["reducer"] == headline["reducer"])
                         & (clustering["clusterer"] == headline["clusterer"])]
        cols = [m for m in clustering_metrics if m in clustering.columns]
        c = sel.melt(id_vars=[*RUN_KEYS, "source", "split", "models"], value_vars=cols,
                     var_name="metric", value_name="value")
        parts.append(c.assign(family="clustering"))
    if not parts:
        return pd.DataFrame(columns=LONG_COLUMNS)
    long = pd.concat(parts, ignore_index=True)[LONG_COLUMNS]
    long["value"] = pd.to_numeric(long["value"], errors="coerce").astype(float)
    order = {m: i for i, m in enumerate([*retrieval_metrics, *clustering_metrics])}
    long["_order"] = long["metric"].map(order)
    long = long.sort_values([*RUN_KEYS, "source", "models", "_order"], ignore_index=True,
                            kind="mergesort")
    return long.drop(columns="_order")


def run_summary(long: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run, source): ``<models>_<metric>`` columns (+ training facts of the run).

    Training columns (``epochs``, ``best_val_map_at_r``, ``best_epoch``, ``train_time_s``)
    describe the fine-tuning of the run and are filled on its ``finetuned`` row only.
    """
    reported = long[long["models"].isin(["seen", "unseen"])]
    if reported.empty:
        wide = pd.DataFrame(columns=[*RUN_KEYS, "source"])
    else:
        wide = (reported.groupby([*RUN_KEYS, "source", "models", "metric"], sort=False)["value"]
                .mean().unstack(["models", "metric"]))
        order = [(m, metric) for m in ("seen", "unseen")
                 for metric in dict.fromkeys(long["metric"]) if (m, metric) in wide.columns]
        wide = wide[order]
        wide.columns = [f"{m}_{metric}" for m, metric in wide.columns]
        wide = wide.reset_index()
    if history is not None and not history.empty:
        _keys_present(history)
        facts = []
        for key, h in history.groupby(list(RUN_KEYS), sort=True):
            h = h.sort_values("epoch")
            val = h.get("mean_average_precision_at_r", pd.Series(dtype=float)).astype(float)
            best = int(val.idxmax()) if val.notna().any() else None
            facts.append({**dict(zip(RUN_KEYS, key, strict=True)), "source": "finetuned",
                          "epochs": int(h["epoch"].max()),
                          "best_epoch": int(h.loc[best, "epoch"]) if best is not None else math.nan,
                          "best_val_map_at_r": float(val.max()) if best is not None else math.nan,
                          "final_train_loss": float(h["train_loss"].iloc[-1]),
                          "train_time_s": float(h["epoch_time_s"].sum())
                          if "epoch_time_s" in h else math.nan})
        wide = wide.merge(pd.DataFrame(facts), on=[*RUN_KEYS, "source"], how="left")
    return wide.sort_values([*RUN_KEYS, "source"], ignore_index=True)


def compare_configurations(long: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean +/- t-interval over seeds per configuration ``(model, loss, views)``, source, models, metric."""
    reported = long[long["models"].isin(["seen", "unseen"])]
    by = [*CONFIG_KEYS, "source", "models", "family", "metric"]
    out = aggregate(reported, by, confidence=confidence)
    return out.rename(columns={"n": "n_seeds"})


def compare_factors(long: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Marginal comparison per factor level (``model``, ``loss``, ``views``).

    Each level averages every run (configuration x seed) that has it; ``n_runs`` runs from
    ``n_configs`` configurations make the interval, so it mixes the variance of the other
    factors with seed variance -- a coarse view; use :func:`compare_configurations` for
    like-for-like numbers.
    """
    reported = long[long["models"].isin(["seen", "unseen"])].copy()
    reported["run"] = reported["variant"].astype(str) + "#" + reported["seed"].astype(str)
    reported["config"] = (reported["model"].astype(str) + "/" + reported["loss"].astype(str)
                          + "/" + reported["views"].astype(str))
    frames = []
    for factor in FACTORS:
        by = [factor, "source", "models", "family", "metric"]
        agg = aggregate(reported, by, confidence=confidence, unit="run").drop(columns="runs")
        n_configs = reported.groupby(by)["config"].nunique().rename("n_configs").reset_index()
        agg = agg.merge(n_configs, on=by, how="left").rename(columns={factor: "level",
                                                                        "n": "n_runs"})
        frames.append(agg.assign(factor=factor))
    cols = ["factor", "level", "source", "models", "family", "metric", "n_runs", "n_configs",
            "mean", "std", "ci_half_width", "ci_low", "ci_high"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["level"] = out["level"].astype(str)
    return out[cols]


def improvement(long: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Baseline -> fine-tuned change per configuration, over seeds.

    Per run: ``abs = finetuned - baseline`` and ``pct = 100 * abs / |baseline|`` (NaN when the
    baseline is 0 or missing). Per configuration: means of baseline, fine-tuned, abs and pct
    over seeds, each change with its t-interval half width (``abs_ci_half_width``,
    ``pct_ci_half_width``).
    """
    reported = long[long["models"].isin(["seen", "unseen"])]
    idx = [*RUN_KEYS, "models", "family", "metric"]
    cols = [*CONFIG_KEYS, "models", "family", "metric", "n_seeds", "baseline", "finetuned",
            "abs", "abs_ci_half_width", "pct", "pct_ci_half_width"]
    if reported.empty:
        return pd.DataFrame(columns=cols)
    per_run = (reported.groupby([*idx, "source"], sort=True)["value"].mean()
               .unstack("source").reset_index())
    per_run.columns.name = None
    for source in ("baseline", "finetuned"):
        if source not in per_run:
            per_run[source] = math.nan
    per_run["abs"] = per_run["finetuned"] - per_run["baseline"]
    base = per_run["baseline"].abs().replace(0.0, np.nan)
    per_run["pct"] = 100.0 * per_run["abs"] / base
    by = [*CONFIG_KEYS, "models", "family", "metric"]
    rows = []
    for key, g in per_run.groupby(by, sort=True):
        d = t_interval(g["abs"], confidence)
        p = t_interval(g["pct"], confidence)
        rows.append({**dict(zip(by, key, strict=True)), "n_seeds": d["n"],
                     "baseline": t_interval(g["baseline"])["mean"],
                     "finetuned": t_interval(g["finetuned"])["mean"],
                     "abs": d["mean"], "abs_ci_half_width": d["ci_half_width"],
                     "pct": p["mean"], "pct_ci_half_width": p["ci_half_width"]})
    return pd.DataFrame(rows, columns=cols)


def best_configuration(comparison: pd.DataFrame, criteria: Sequence[dict[str, str]]) -> pd.DataFrame:
    """The best configuration per criterion (highest mean over seeds), with its runner-up.

    Ties on the mean go to more seeds, then to the alphabetically first configuration.
    ``separable`` is False when the winner's interval overlaps the runner-up's (or an
    interval is undefined), i.e. the data cannot tell the two apart.
    """
    rows = []
    for crit in criteria:
        metric, models, source = crit["metric"], crit.get("models", "unseen"), crit.get("source", "finetuned")
        sub = comparison[(comparison["metric"] == metric) & (comparison["models"] == models)
                         & (comparison["source"] == source) & comparison["mean"].notna()]
        row: dict[str, Any] = {"criterion": f"{metric_label(metric)} ({models} models, {source})",
                               "metric": metric, "models": models, "source": source,
                               "n_configs": int(len(sub))}
        if sub.empty:
            rows.append(row)
            continue
        ranked = sub.assign(_neg=-sub["mean"], _negn=-sub["n_seeds"]).sort_values(
            ["_neg", "_negn", *CONFIG_KEYS], kind="mergesort")
        best = ranked.iloc[0]
        row.update({k: best[k] for k in CONFIG_KEYS})
        row.update({"configuration": config_label(best), "mean": best["mean"],
                    "ci_low": best["ci_low"], "ci_high": best["ci_high"],
                    "n_seeds": int(best["n_seeds"])})
        if len(ranked) > 1:
            second = ranked.iloc[1]
            row.update({"runner_up": config_label(second), "runner_up_mean": second["mean"],
                        "margin": best["mean"] - second["mean"],
                        "separable": bool(np.isfinite(best["ci_low"])
                                          and np.isfinite(second["ci_high"])
                                          and best["ci_low"] > second["ci_high"])})
        rows.append(row)
    cols = ["criterion", "metric", "models", "source", *CONFIG_KEYS, "configuration", "mean",
            "ci_low", "ci_high", "n_seeds", "n_configs", "runner_up", "runner_up_mean", "margin",
            "separable"]
    return pd.DataFrame(rows, columns=cols)


def clustering_methods(clustering: pd.DataFrame, confidence: float = 0.95,
                       metrics: Sequence[str] = ("ari", "ami", "purity", "n_clusters",
                                                 "noise_fraction")) -> pd.DataFrame:
    """Every clustering method (mode x reducer x clusterer) per source and models, over runs.

    Wide: ``<metric>`` = mean over runs (seeds and configurations pooled), ``ari_ci_half_width``,
    ``n_runs``. Shows how much the headline choice matters.
    """
    by = ["source", "models", "selection_mode", "reducer", "clusterer"]
    if clustering.empty:
        return pd.DataFrame(columns=[*by, "n_runs", *metrics])
    c = clustering.copy()
    c["run"] = c["variant"].astype(str) + "#" + c["seed"].astype(str)
    out = None
    for metric in metrics:
        if metric not in c:
            continue
        agg = aggregate(c, by, value=metric, confidence=confidence, unit="run")
        keep = agg[[*by, "mean"]].rename(columns={"mean": metric})
        if metric == "ari":
            keep["ari_ci_half_width"] = agg["ci_half_width"]
            keep["n_runs"] = agg["n"]
        out = keep if out is None else out.merge(keep, on=by, how="outer")
    assert out is not None
    if "uses_true_k" in c:
        true_k = c.assign(uses_true_k=c["uses_true_k"].astype(str).str.lower().eq("true"))
        out = out.merge(true_k.groupby(by)["uses_true_k"].any().reset_index(), on=by, how="left")
    order = {m: i for i, m in enumerate(MODE_ORDER)}
    out = out.assign(_m=out["selection_mode"].map(order)).sort_values(
        ["source", "models", "_m", "reducer", "clusterer"]).drop(columns="_m")
    return out.reset_index(drop=True)
