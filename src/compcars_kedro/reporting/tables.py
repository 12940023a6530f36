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

from compcars_kedro.names import (
    BASELINE,
    FINETUNED,
    LABELLED_MODES,
    MODE_ORDER,
    ORACLE,
    REFERENCE,
    SOURCES,
)

logger = logging.getLogger(__name__)

RUN_KEYS: tuple[str, ...] = ("variant", "model", "loss", "views", "seed")
CONFIG_KEYS: tuple[str, ...] = ("model", "loss", "views")
FACTORS: tuple[str, ...] = ("model", "loss", "views")
#: optional run keys carried through when present (the grid may vary the class split)
OPTIONAL_RUN_KEYS: tuple[str, ...] = ("split_seed",)
#: retrieval split -> which models it measures (val only tunes; it is kept as ``val``)
SPLIT_MODELS = {"test": "seen", "unseen": "unseen", "val": "val"}
#: metrics where higher is better (an "improvement %" is only defined for these)
HIGHER_IS_BETTER = frozenset({"precision_at_1", "r_precision", "mean_average_precision_at_r",
                              "ari", "ami", "nmi", "purity", "pct_pure_clusters",
                              "pct_dominant_clusters", "accuracy", "zero_shot_accuracy"})

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
    "zero_shot_accuracy": "zero-shot accuracy",
}

LONG_COLUMNS = [*RUN_KEYS, "replicate", "source", "split", "models", "family", "metric", "value"]
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


def paired_p_value(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided paired t-test p-value of ``x`` vs ``y`` (NaN below 2 pairs).

    Differences that are all equal (up to rounding) leave t undefined: p is then 1 when they
    are all 0 and 0 otherwise (every replicate moved by the same amount).
    """
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return math.nan
    if np.allclose(d, d[0], rtol=1e-9, atol=1e-12):
        return 1.0 if abs(d[0]) <= 1e-12 else 0.0
    return float(stats.ttest_rel(d, np.zeros_like(d)).pvalue)


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
    the wanted mode if present, else transfer, internal, reference, then oracle (the last two
    are labelled bounds and a note says so); then the wanted reducer /
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
    if mode in LABELLED_MODES:
        notes.append(f"the quoted clustering uses the {mode!r} selection: a labelled bound "
                     "(true k or tuned on the reported labels), not a discovery result")
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


def replicate_of(seed: Any, split_seed: Any = None) -> str:
    """Name of one replicate: ``s0`` (training seed) or ``s0/split1`` (and class-split seed)."""
    if split_seed is None or (isinstance(split_seed, float) and math.isnan(split_seed)):
        return f"s{seed}"
    return f"s{seed}/split{split_seed}"


def with_replicate(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``replicate`` column (added from ``seed`` / ``split_seed``)."""
    if "replicate" in table or table.empty:
        return table if "replicate" in table else table.assign(replicate=pd.Series(dtype=str))
    split_seed = table["split_seed"] if "split_seed" in table else [None] * len(table)
    return table.assign(replicate=[replicate_of(s, p) for s, p in
                                   zip(table["seed"], split_seed, strict=True)])


def metrics_long(retrieval: pd.DataFrame, clustering: pd.DataFrame, headline: dict[str, str],
                 retrieval_metrics: Sequence[str], clustering_metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (run, source, split, metric): retrieval metrics + the headline clustering.

    Columns: ``variant, model, loss, views, seed, replicate, source, split, models, family,
    metric, value``; ``replicate`` names the unit counted as ``n`` (training seed, and the
    class-split seed when the table has ``split_seed``).
    """
    parts = []
    if not retrieval.empty:
        _keys_present(retrieval)
        cols = [m for m in retrieval_metrics if m in retrieval.columns]
        retrieval = with_replicate(retrieval)
        r = retrieval.melt(id_vars=[*RUN_KEYS, "replicate", "source", "split"], value_vars=cols,
                           var_name="metric", value_name="value")
        r["models"] = r["split"].map(SPLIT_MODELS).fillna(r["split"])
        parts.append(r.assign(family="retrieval"))
    if not clustering.empty:
        _keys_present(clustering)
        sel = clustering[(clustering["selection_mode"] == headline["selection_mode"])
                         & (clustering["reducer"] == headline["reducer"])
                         & (clustering["clusterer"] == headline["clusterer"])]
        cols = [m for m in clustering_metrics if m in clustering.columns]
        sel = with_replicate(sel)
        c = sel.melt(id_vars=[*RUN_KEYS, "replicate", "source", "split", "models"], value_vars=cols,
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
            facts.append({**dict(zip(RUN_KEYS, key, strict=True)), "source": FINETUNED,
                          "epochs": int(h["epoch"].max()),
                          "best_epoch": int(h.loc[best, "epoch"]) if best is not None else math.nan,
                          "best_val_map_at_r": float(val.max()) if best is not None else math.nan,
                          "final_train_loss": float(h["train_loss"].iloc[-1]),
                          "train_time_s": float(h["epoch_time_s"].sum())
                          if "epoch_time_s" in h else math.nan})
        wide = wide.merge(pd.DataFrame(facts), on=[*RUN_KEYS, "source"], how="left")
    return wide.sort_values([*RUN_KEYS, "source"], ignore_index=True)


def compare_configurations(long: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean +/- t-interval over replicates per configuration, source, models (val, seen,
    unseen), metric. ``n_seeds`` counts replicates (seed x split seed), listed in ``replicates``."""
    reported = with_replicate(long[long["models"].isin(["val", "seen", "unseen"])])
    by = [*CONFIG_KEYS, "source", "models", "family", "metric"]
    out = aggregate(reported, by, confidence=confidence, unit="replicate")
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


def improvement(long: pd.DataFrame, confidence: float = 0.95, epsilon: float = 0.01,
                alpha: float = 0.05) -> pd.DataFrame:
    """Baseline -> fine-tuned change per configuration, paired by replicate.

    Per run: ``abs = finetuned - baseline``; ``pct = 100 * abs / baseline`` only for metrics
    with a direction (:data:`HIGHER_IS_BETTER`) and a baseline above ``epsilon`` (else NaN:
    a relative change from ~0, or of a count, says nothing). Per configuration: means of
    baseline, fine-tuned, abs and pct over replicates, each change with its t-interval half
    width, and a paired t-test of fine-tuned vs baseline (``p_value``, NaN with one replicate).
    """
    reported = with_replicate(long[long["models"].isin(["seen", "unseen"])])
    idx = [*RUN_KEYS, "replicate", "models", "family", "metric"]
    cols = [*CONFIG_KEYS, "models", "family", "metric", "n_seeds", BASELINE, FINETUNED,
            "abs", "abs_ci_half_width", "p_value", "pct", "pct_ci_half_width"]
    if reported.empty:
        return pd.DataFrame(columns=cols)
    per_run = (reported.groupby([*idx, "source"], sort=True)["value"].mean()
               .unstack("source").reset_index())
    per_run.columns.name = None
    for source in SOURCES:
        if source not in per_run:
            per_run[source] = math.nan
    per_run["abs"] = per_run[FINETUNED] - per_run[BASELINE]
    directed = per_run["metric"].isin(HIGHER_IS_BETTER)
    base = per_run[BASELINE].where(directed & (per_run[BASELINE] > epsilon))
    per_run["pct"] = 100.0 * per_run["abs"] / base
    by = [*CONFIG_KEYS, "models", "family", "metric"]
    rows = []
    for key, g in per_run.groupby(by, sort=True):
        g = g.groupby("replicate")[[BASELINE, FINETUNED, "abs", "pct"]].mean()
        d = t_interval(g["abs"], confidence)
        p = t_interval(g["pct"], confidence)
        pair = g[[BASELINE, FINETUNED]].dropna()
        p_value = paired_p_value(pair[FINETUNED], pair[BASELINE])
        rows.append({**dict(zip(by, key, strict=True)), "n_seeds": d["n"],
                     BASELINE: t_interval(g[BASELINE])["mean"],
                     FINETUNED: t_interval(g[FINETUNED])["mean"],
                     "abs": d["mean"], "abs_ci_half_width": d["ci_half_width"],
                     "p_value": p_value,
                     "pct": p["mean"], "pct_ci_half_width": p["ci_half_width"]})
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
    true_k = out["uses_true_k"].fillna(False).astype(bool) if "uses_true_k" in out else False
    out["label"] = np.select(
        [out["selection_mode"].eq(REFERENCE) | true_k, out["selection_mode"].eq(ORACLE)],
        ["reference: given the true number of models", "oracle: tuned on the reported labels"],
        "")
    order = {m: i for i, m in enumerate(MODE_ORDER)}
    out = out.assign(_m=out["selection_mode"].map(order)).sort_values(
        ["source", "models", "_m", "reducer", "clusterer"]).drop(columns="_m")
    return out.reset_index(drop=True)
