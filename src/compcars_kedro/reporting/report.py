"""Assemble the one-file HTML report from the results tables and the figure payloads.

The page opens with the answer (one paragraph, one headline table), then the data it ran on;
the evidence follows. Section ids are stable (:data:`SECTIONS`); tests and links rely on them.
The ``clip-layers`` section appears only when a CLIP layers table was given. Sections that
need several configurations say so in one line when there is only one.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compcars_kedro.reporting import html as H
from compcars_kedro.reporting.paired import clip_claims as clip_claims_of
from compcars_kedro.reporting.paired import p_text
from compcars_kedro.reporting.params import ReportingParams, reporting_params
from compcars_kedro.reporting.tables import (
    CONFIG_KEYS,
    RUN_KEYS,
    config_label,
    metric_label,
    resolve_headline,
)

#: (id, heading) of every section, in page order
SECTIONS: tuple[tuple[str, str], ...] = (
    ("answer", "The answer"),
    ("data", "Data it ran on"),
    ("claims", "The original study's claims"),
    ("best-configuration", "Best configuration (chosen on val)"),
    ("matched", "Seen vs unseen on matched subsamples"),
    ("improvement", "Improvement: baseline to fine-tuned"),
    ("protocol", "Protocol"),
    ("run-summary", "Per-run summary"),
    ("comparison", "Comparison by configuration"),
    ("factor-comparison", "Comparison by model, loss and views"),
    ("clustering-methods", "All clustering methods"),
    ("training-curves", "Training curves"),
    ("baseline-vs-finetuned", "Baseline vs fine-tuned"),
    ("heatmaps", "Model x loss heatmaps"),
    ("embedding-scatter", "Embedding maps"),
    ("cluster-galleries", "Cluster galleries"),
    ("confusion-matrix", "Confusion matrix"),
    ("clip-layers", "CLIP layers"),
    ("parameters", "Parameters"),
    ("notes", "Notes"),
)
OPTIONAL_SECTIONS = frozenset({"clip-layers"})
TITLES = dict(SECTIONS)
#: the one line shown instead of a table that needs several configurations
SINGLE_RUN = ("single run: run the grid to compare configurations "
              "(kedro run --pipelines grid, then kedro run --pipelines grid_report)")

MODE_TEXT = {
    "internal": "internal: parameters chosen without any label (silhouette of non-noise points "
                "penalised by the noise fraction) on the reported split itself",
    "transfer": "transfer: parameters chosen on the labelled val split of seen models (AMI), "
                "frozen, then applied once to the reported split",
    "reference": "reference: kmeans given the true number of models -- a labelled bound, not "
                 "a discovery result",
    "oracle": "oracle: parameters tuned on the reported split's own labels -- an upper bound, "
              "not a result",
}
MODELS_TEXT = {"seen": "seen models (test split)", "unseen": "unseen models (unseen split)",
               "val": "val split (seen models, used for choices)"}

#: display names of table columns (anything else: underscores become spaces)
COLUMN_LABELS = {
    "model": "backbone", "loss": "loss", "views": "views", "seed": "seed", "variant": "variant",
    "source": "source", "models": "models", "metric": "metric", "n_seeds": "n",
    "n_runs": "n runs", "n_configs": "n configs", "n": "n", "mean": "mean", "std": "std",
    "ci_low": "CI low", "ci_high": "CI high", "ci_half_width": "± (CI)",
    "selection_mode": "selection", "reducer": "reducer", "clusterer": "clusterer",
    "ari_ci_half_width": "ARI ± (CI)", "uses_true_k": "true k", "label": "labelled as",
    "epochs": "epochs", "best_epoch": "best epoch", "best_val_map_at_r": "best val MAP@R",
    "final_train_loss": "final train loss", "train_time_s": "train time (s)",
    "n_matched_configs": "matched configs", "mean_a": "mean A", "mean_b": "mean B",
    "diff": "A − B", "diff_ci_low": "A − B CI low", "diff_ci_high": "A − B CI high",
    "p_value": "p", "verdict": "verdict", "claim": "claim", "a": "A", "b": "B",
    "status": "status", "replicates": "replicates", "component": "component",
    "trainable_layers": "trainable layers", "layer_counts": "layer counts",
    "split": "split", "n_draws": "draws", "n_classes": "classes", "per_class": "per class",
}


def column_label(column: str) -> str:
    """Human name of a table column: ``seen_mean_average_precision_at_r`` -> ``seen MAP@R``."""
    if column in COLUMN_LABELS:
        return COLUMN_LABELS[column]
    for prefix in ("seen_", "unseen_", "val_"):
        if column.startswith(prefix):
            return f"{prefix[:-1]} {metric_label(column[len(prefix):])}"
    label = metric_label(column)
    return label if label != column else column.replace("_", " ")


def humanize(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with human column names and metric names (for display only)."""
    if df is None or df.empty:
        return df
    out = df.copy()
    if "metric" in out:
        out["metric"] = out["metric"].map(lambda m: metric_label(str(m)))
    return out.rename(columns={c: column_label(c) for c in out.columns})


def _figures(pay: Mapping[str, Any] | None, empty_text: str) -> str:
    if not pay:
        return H.note(empty_text)
    parts = [H.note(n) for n in pay.get("notes", [])]
    figs = pay.get("figures", [])
    parts += [H.image(f["png"], f.get("caption", ""), alt=f.get("name", ""),
                      fig_id="fig-" + f.get("name", "").removesuffix(".png")) for f in figs]
    if not parts:
        parts.append(H.note(empty_text))
    return "\n".join(parts)


def _num(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits (``-0`` shown as ``0``)."""
    return H.format_value(float(value), digits)


def _mean_ci(mean: float, half: float, digits: int = 3) -> str:
    """``mean ± half`` (no half width when undefined; ``–`` when there is no mean)."""
    if pd.isna(mean):
        return "–"
    return _num(mean, digits) + ("" if pd.isna(half) else f" ± {_num(half, digits)}")


def _interval(mean: float, low: float, high: float) -> str:
    """``mean [low, high]``; just the mean when the interval is undefined (one replicate)."""
    if pd.isna(mean):
        return "–"
    if pd.isna(low) or pd.isna(high):
        return _num(mean)
    return f"{_num(mean)} [{_num(low)}, {_num(high)}]"


def _configs(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    rs = tables["run_summary"]
    return rs[list(CONFIG_KEYS)].drop_duplicates() if not rs.empty else pd.DataFrame()


def comparison_display(comparison: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                       n_col: str = "n_seeds") -> pd.DataFrame:
    """Wide, readable view: one row per ``by`` + source + models, ``mean ± half width`` cells."""
    if comparison.empty:
        return pd.DataFrame()
    c = comparison[comparison["metric"].isin(metrics)
                   & comparison["models"].isin(["seen", "unseen"])].copy()
    if c.empty:
        return pd.DataFrame()
    c["cell"] = [_mean_ci(m, h) for m, h in zip(c["mean"], c["ci_half_width"], strict=True)]
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
    i["change"] = [_mean_ci(a, h) for a, h in zip(i["abs"], i["abs_ci_half_width"], strict=True)]
    i["change %"] = [_mean_ci(a, h, 2) for a, h in zip(i["pct"], i["pct_ci_half_width"],
                                                       strict=True)]
    p = i["p_value"] if "p_value" in i else pd.Series(math.nan, index=i.index)
    i["p (paired t)"] = [p_text(v).removeprefix("p = ").removeprefix("p ") for v in p]
    cols = [*CONFIG_KEYS, "models", "metric", "n_seeds", "baseline", "finetuned", "change",
            "p (paired t)", "change %"]
    return humanize(i[cols].rename(columns={"finetuned": "fine-tuned"}))


# --------------------------------------------------------------------------- replicates
def _replicates(metrics_long: pd.DataFrame | None, run_summary: pd.DataFrame,
                split_summary: Mapping[str, Any] | None) -> str:
    """What varied between the replicates counted as ``n`` (training seed, split seed)."""
    split_seed = ((split_summary or {}).get("params") or {}).get("seed")
    seeds = sorted(set(run_summary["seed"])) if not run_summary.empty else []
    split_seeds: list[Any] = []
    if metrics_long is not None and "replicate" in metrics_long:  # "s0/split42" names
        split_seeds = sorted({int(r.split("/split")[1]) for r in metrics_long["replicate"]
                              if isinstance(r, str) and "/split" in r})
    seed_text = (f"training seed varied over {', '.join(map(str, seeds))}" if len(seeds) > 1
                 else f"training seed fixed at {seeds[0]}" if seeds else "no run")
    if len(split_seeds) > 1:
        split_text = f"class-split seed varied over {', '.join(map(str, split_seeds))}"
    else:
        fixed = split_seeds[0] if split_seeds else split_seed
        split_text = (f"class split fixed (split seed {fixed})" if fixed is not None
                      else "class split fixed")
    return f"{seed_text}; {split_text}"


# --------------------------------------------------------------------------- the answer
def _headline_config(tables: Mapping[str, pd.DataFrame]) -> tuple[dict[str, Any] | None, str]:
    """The configuration the headline quotes and the rule that chose it."""
    configs = _configs(tables)
    best = tables.get("best_configuration", pd.DataFrame())
    if len(configs) == 1:
        return configs.iloc[0].to_dict(), "the only configuration run"
    if best is not None and not best.empty and pd.notna(best["configuration"].iloc[0]):
        b = best.iloc[0]
        return ({k: b[k] for k in CONFIG_KEYS},
                f"chosen by {b['rule']} (val = {_num(b['val_mean'])}, n = {int(b['val_n'])})")
    if len(configs):
        return configs.iloc[0].to_dict(), "first configuration (no val metric to choose on)"
    return None, "no run"


def headline_table(comparison: pd.DataFrame, config: Mapping[str, Any] | None) -> pd.DataFrame:
    """Seen and unseen x baseline and fine-tuned: ARI, AMI (each with the noise fraction) and
    MAP@R, each ``mean [CI]``, and ``n`` (replicates)."""
    cols = ["models", "source", "ARI", "AMI", "noise fraction", "MAP@R", "n"]
    if comparison.empty or config is None:
        return pd.DataFrame(columns=cols)
    c = comparison
    for k in CONFIG_KEYS:
        c = c[c[k].astype(str) == str(config[k])]
    rows = []
    for models in ("seen", "unseen"):
        for source in ("baseline", "finetuned"):
            sel = c[(c["models"] == models) & (c["source"] == source)].set_index("metric")
            if sel.empty:
                continue

            def cell(metric: str, sel: pd.DataFrame = sel) -> str:
                if metric not in sel.index:
                    return "–"
                r = sel.loc[metric]
                return _interval(r["mean"], r["ci_low"], r["ci_high"])

            rows.append({"models": MODELS_TEXT[models],
                         "source": "fine-tuned" if source == "finetuned" else "baseline",
                         "ARI": cell("ari"), "AMI": cell("ami"),
                         "noise fraction": cell("noise_fraction"),
                         "MAP@R": cell("mean_average_precision_at_r"),
                         "n": int(sel["n_seeds"].max())})
    return pd.DataFrame(rows, columns=cols)


def _value(comparison: pd.DataFrame, config: Mapping[str, Any], models: str, source: str,
           metric: str) -> float:
    c = comparison[(comparison["models"] == models) & (comparison["source"] == source)
                   & (comparison["metric"] == metric)]
    for k in CONFIG_KEYS:
        c = c[c[k].astype(str) == str(config[k])]
    return float(c["mean"].iloc[0]) if len(c) else math.nan


def _answer_section(tables: Mapping[str, pd.DataFrame], headline: Mapping[str, str],
                    replicates: str, p: ReportingParams) -> str:
    comparison = tables["comparison"]
    config, rule = _headline_config(tables)
    if config is None:
        return H.note("no results: nothing to report yet (run `kedro run`)")
    table = headline_table(comparison, config)
    n = int(table["n"].max()) if len(table) else 0

    def change(models: str, metric: str) -> str:
        b = _value(comparison, config, models, "baseline", metric)
        f = _value(comparison, config, models, "finetuned", metric)
        if pd.isna(b) and pd.isna(f):
            return f"{metric_label(metric)} –"
        return f"{metric_label(metric)} {_num(b)} → {_num(f)}"

    unseen = [change("unseen", m) for m in ("ari", "ami", "mean_average_precision_at_r")]
    seen = [change("seen", m) for m in ("ari", "ami", "mean_average_precision_at_r")]
    text = (f"Fine-tuning {config_label(config)} moves the clusters of unseen car models "
            f"({', '.join(unseen)}) and of seen car models ({', '.join(seen)}), baseline → "
            f"fine-tuned. Seen = the test split (models trained on, images never seen); unseen "
            f"= models held out of training. Configuration: {rule}. Clustering: "
            f"{_method_text(headline)}. n = {n} replicate(s): {replicates}"
            + ("; one replicate gives no interval and no test." if n < 2 else
               f"; brackets = {p.confidence:.0%} Student-t interval over replicates."))
    parts = [H.paragraph(text, cls="key"), H.table(table, table_id="headline-table")]
    imp = tables.get("improvement", pd.DataFrame())
    if imp is not None and not imp.empty and n >= 2:
        sel = imp[imp["metric"].isin(["ari", "ami", "mean_average_precision_at_r"])]
        for k in CONFIG_KEYS:
            sel = sel[sel[k].astype(str) == str(config[k])]
        tests = [f"{r['models']} {metric_label(r['metric'])} {p_text(r['p_value'])}"
                 for _, r in sel.iterrows()]
        if tests:
            parts.append(H.paragraph("Fine-tuned vs baseline, paired t-test over replicates: "
                                     + "; ".join(tests) + "."))
    return "\n".join(parts)


def _method_text(method: Mapping[str, str]) -> str:
    return (f"{method['clusterer']} on {method['reducer']}, {method['selection_mode']} "
            "selection (parameters chosen on val)" if method.get("selection_mode") == "transfer"
            else f"{method['clusterer']} on {method['reducer']}, {method['selection_mode']} "
                 "selection")


# --------------------------------------------------------------------------- data
def _data_section(data_info: Mapping[str, Any] | None, split_summary: Mapping[str, Any] | None
                  ) -> str:
    info = dict(data_info or {})
    pairs: list[tuple[str, Any]] = [
        ("raw data", info.get("raw_path") or "unknown (no raw source given to the report)"),
        ("kind", info.get("kind_text", "unknown")),
    ]
    if info.get("images_total") is not None:
        pairs.append(("images kept (all splits)", info["images_total"]))
    if info.get("models_seen") is not None or info.get("models_unseen") is not None:
        pairs.append(("car models", f"{info.get('models_seen', '–')} seen in training, "
                                    f"{info.get('models_unseen', '–')} held out (unseen)"))
    sample = info.get("sample") or {}
    if sample:
        pairs.append(("sample generator", f"{sample.get('images_on_disk', '–')} images on disk "
                      f"({sample.get('images_planted', 0)} planted edge cases), "
                      f"{sample.get('makes', '–')} makes, {sample.get('models', '–')} models"))
    weights = info.get("weights") or {}
    pairs.append(("weights", "; ".join(f"{k}: {v}" for k, v in weights.items()) or "unknown"))
    summary = dict(split_summary or {})
    if summary.get("pairing"):
        pairs.append(("view pairing", summary["pairing"]))
    dups = summary.get("near_duplicate_groups") or {}
    if dups:
        pairs.append(("near-duplicate groups", f"{dups.get('groups', 0)} groups of "
                      f"{dups.get('images_in_groups', 0)} images ({dups.get('method', '?')}, "
                      "each group kept in one split)"))
    parts = [H.key_values(pairs)]
    split = _split_table(split_summary)
    if not split.empty:
        parts.append(H.table(split))
    return "\n".join(parts)


def _split_table(split_summary: Mapping[str, Any] | None) -> pd.DataFrame:
    if not split_summary:
        return pd.DataFrame()
    images = split_summary.get("images_per_split", {})
    classes = split_summary.get("classes_per_split", {})
    pairs = split_summary.get("pairs_per_split", {})
    role = {"train": "training", "val": "early stopping + choices (seen models)",
            "test": "reported: seen models", "unseen": "reported: unseen (held-out) models"}
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
        row["role"] = role.get(s, "")
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- claims, best
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
    t["A − B [CI]"] = [_interval(d, lo, hi) for d, lo, hi in
                       zip(t["diff"], t["diff_ci_low"], t["diff_ci_high"], strict=True)]
    t["p_value"] = [p_text(v).removeprefix("p = ").removeprefix("p ") for v in t["p_value"]]
    cols = ["claim", "a", "b", "models", "metric", "n", "mean_a", "mean_b", "A − B [CI]",
            "p_value", "verdict", "n_matched_configs", "status"]
    return lines, humanize(t[cols])


def _claims_section(claims: pd.DataFrame, clip_claims: pd.DataFrame | None) -> str:
    frames = [f for f in (claims, clip_claims) if f is not None and not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    lines, shown = claims_lines(table)
    parts = [H.paragraph(
        "Each claim of the original study as a paired difference A − B of fine-tuned models: "
        "runs are matched on the other settings and on the replicate (seed), the per-replicate "
        "differences give the mean, its Student-t interval and a paired t-test. The verdict "
        "comes from the test, never from overlapping intervals.")]
    if lines:
        parts.append("<h3>Not testable with these runs</h3>" + H.bullet_list(lines))
    if not shown.empty:
        parts.append(H.table(shown, table_id="claims-table"))
    return "\n".join(parts)


def best_display(best: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The selection sentence and the chosen configuration's test / unseen numbers."""
    if best is None or best.empty or pd.isna(best["configuration"].iloc[0]):
        return "", pd.DataFrame()
    b = best.iloc[0]
    text = (f"{b['configuration']} was chosen by the {b['rule']}: val {_num(b['val_mean'])} "
            f"(n = {int(b['val_n'])}) among {int(b['n_configs'])} configurations.")
    if isinstance(b.get("runner_up"), str):
        text += (f" Runner-up on val: {b['runner_up']} ({_num(b['runner_up_val_mean'])}); "
                 f"val difference {_interval(b['val_diff'], b['val_diff_ci_low'], b['val_diff_ci_high'])}"
                 f", {b['val_verdict']}.")
    text += " The numbers below are the chosen configuration's test and unseen results."
    rows = best[best["models"].notna()].copy()
    if rows.empty:
        return text, pd.DataFrame()
    rows["models"] = rows["models"].map(lambda m: MODELS_TEXT.get(m, m))
    rows["cell"] = [_interval(m, lo, hi) for m, lo, hi in
                    zip(rows["mean"], rows["ci_low"], rows["ci_high"], strict=True)]
    order = list(dict.fromkeys(rows["metric"]))
    wide = rows.pivot_table(index="models", columns="metric", values="cell", aggfunc="first",
                            sort=False)[order]
    wide.columns = [metric_label(m) for m in wide.columns]
    wide = wide.join(rows.groupby("models")["n"].max()).reset_index()
    return text, humanize(wide)


def _runs_table(run_summary: pd.DataFrame) -> pd.DataFrame:
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


def _seeds_table(run_summary: pd.DataFrame) -> pd.DataFrame:
    if run_summary.empty:
        return pd.DataFrame()
    runs = run_summary[list(RUN_KEYS)].drop_duplicates()
    return humanize(runs.groupby(list(CONFIG_KEYS))["seed"]
                    .agg(n_seeds="nunique", seeds=lambda s: ", ".join(str(v) for v in sorted(set(s))))
                    .reset_index())


MATCHED_METRICS = ("ari", "ami", "noise_fraction", "mean_average_precision_at_r")


def matched_summary(matched: pd.DataFrame | None, headline: Mapping[str, str],
                    metrics: Sequence[str] = MATCHED_METRICS) -> pd.DataFrame:
    """Mean and std over draws per source x models x metric of a matched-subsample table.

    Accepts the per-draw table of the clustering pipeline (``draw``, ``kind`` = retrieval |
    clustering, method columns, one column per metric; clustering rows are reduced to the
    headline method) or an already summarised long table (``source, split|models, metric,
    mean, std, n_draws, n_classes, per_class``). Output: ``source, models, metric, mean, std,
    n_draws, n_classes, per_class``.
    """
    cols = ["source", "models", "metric", "mean", "std", "n_draws", "n_classes", "per_class",
            "method"]
    if matched is None or len(matched) == 0:
        return pd.DataFrame(columns=cols)
    m = matched.copy()
    if "models" not in m and "split" in m:
        m["models"] = m["split"].map({"test": "seen", "unseen": "unseen"}).fillna(m["split"])
    def headline_rows(t: pd.DataFrame) -> pd.DataFrame:
        """Rows of the headline method; rows without a method (retrieval) are kept."""
        keep = pd.Series(True, index=t.index)
        for key in ("selection_mode", "reducer", "clusterer"):
            if key in t:
                blank = t[key].isna() | (t[key].astype(str) == "")
                keep &= blank | (t[key] == headline[key])
        return t[keep]

    if "metric" in m and "mean" in m:  # already summarised (e.g. matched_summary_long)
        m = headline_rows(m)
        for c in cols:
            if c not in m:
                m[c] = math.nan
        return m[cols]
    if "kind" in m and {"selection_mode", "reducer", "clusterer"} <= set(m.columns):
        cl = m[m["kind"] == "clustering"]
        if len(cl) and not (headline_rows(cl).shape[0]):  # e.g. matched.reducers: [pca]
            headline, _ = resolve_headline(cl, dict(headline))
            m = m.assign(matched_method=f"{headline['clusterer']} on {headline['reducer']}, "
                                        f"{headline['selection_mode']} selection")
    m = headline_rows(m)
    if "n_samples" in m and "n_classes" in m:
        m["per_class"] = m["n_samples"] / m["n_classes"].where(m["n_classes"] > 0)
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
    return pd.DataFrame(rows, columns=cols)


def matched_section(matched: pd.DataFrame | None, comparison: pd.DataFrame | None = None,
                    config: Mapping[str, Any] | None = None,
                    headline: Mapping[str, str] | None = None) -> str:
    """Seen vs unseen on matched subsamples (same number of classes, same per-class count),
    next to the full-split numbers of the same configuration; absent or empty -> one line."""
    headline = headline or {"selection_mode": "transfer", "reducer": "umap",
                            "clusterer": "hdbscan"}
    summary = matched_summary(matched, headline)
    if summary.empty:
        return H.note("no matched-subsample table in this run: the seen vs unseen numbers "
                      "above come from splits of different sizes")
    rows = []
    for (models, source), g in summary.groupby(["models", "source"], sort=False):
        row: dict[str, Any] = {"models": MODELS_TEXT.get(models, models),
                               "source": "fine-tuned" if source == "finetuned" else source}
        for _, r in g.iterrows():
            label = metric_label(r["metric"])
            row[f"{label} matched"] = _mean_ci(r["mean"], r["std"])
            if comparison is not None and config is not None and not comparison.empty:
                row[f"{label} full"] = _num_or_dash(
                    _value(comparison, config, models, source, r["metric"]))
        row.update({"draws": int(g["n_draws"].max()),
                    "classes": _count(g["n_classes"].max()),
                    "per class": _count(g["per_class"].max())})
        rows.append(row)
    methods = {x for x in summary["method"].dropna() if x}
    text = ("Seen and unseen scored on subsamples with the same number of car models and the "
            "same images per model, over several seeded draws (matched = mean ± std over "
            "draws; full = the whole split, as in the answer): what remains of the gap is not "
            "a size effect.")
    if methods:
        text += (f" The matched table has no row of the quoted clustering method; its clustering "
                 f"columns use {', '.join(sorted(methods))} (full columns: the quoted method).")
    return H.paragraph(text) + H.table(pd.DataFrame(rows), table_id="matched-table")


def _count(value: float) -> Any:
    """A count as an int (a median of counts may be fractional: then 3 significant digits)."""
    if pd.isna(value):
        return math.nan
    return int(value) if float(value).is_integer() else float(value)


def _num_or_dash(value: float) -> str:
    return "–" if pd.isna(value) else _num(value)


# --------------------------------------------------------------------------- protocol
def _protocol_section(tables: Mapping[str, pd.DataFrame], headline: Mapping[str, str],
                      headline_notes: Sequence[str], split_summary: Mapping[str, Any] | None,
                      finetuning_config: Mapping[str, Any] | None, parameters: Mapping[str, Any],
                      p: ReportingParams, figure_run: str, replicates: str) -> str:
    methods = tables["clustering_methods"]
    parts = []
    if split_summary:
        excluded = split_summary.get("excluded") or {}
        if excluded:
            parts.append(H.paragraph("Excluded images: " + ", ".join(
                f"{k}: {v}" for k, v in excluded.items())))
        dp = split_summary.get("params", {})
        if dp:
            parts.append(H.key_values([(k, v) for k, v in dp.items() if not isinstance(v, dict)]))
    else:
        parts.append(H.note("no split summary given"))
    parts.append("<h3>Runs and replicates</h3>")
    parts.append(H.table(_seeds_table(tables["run_summary"])))
    seeds = [("what varied", replicates),
             ("data split seed", (split_summary or {}).get("params", {}).get("seed", "–")),
             ("clustering seed", (parameters.get("clustering") or {}).get("seed", "–")),
             ("2-D map seed", p.scatter.seed)]
    parts.append(H.key_values(seeds))
    parts.append("<h3>Evaluation</h3>")
    modes = list(dict.fromkeys(methods["selection_mode"])) if not methods.empty else []
    reducers = sorted(set(methods["reducer"])) if not methods.empty else []
    clusterers = sorted(set(methods["clusterer"])) if not methods.empty else []
    items = [
        "Retrieval: every sample of a split queries all others of the same split (itself "
        "excluded); P@1, R-precision and MAP@R against the true car model.",
        "Baseline = the starting backbone's embedding before any training step (pretrained "
        "weights or the seeded random initialisation); fine-tuned = the checkpoint with the best "
        "val MAP@R.",
        f"Clustering grid: reducers {', '.join(reducers) or '–'}; clusterers "
        f"{', '.join(clusterers) or '–'} (kmeans is given the true number of models: a "
        "labelled reference, not a discovery result).",
        *[f"Selection mode {MODE_TEXT.get(m, m)}" for m in modes],
        f"Quoted clustering method (answer, comparisons, maps, galleries): {_method_text(headline)}"
        ". Headline clustering metrics: ARI and AMI, each with the noise fraction (NMI is not "
        "used: with noise points as singletons an all-noise answer scores about 0.8).",
        f"Choices: the best configuration is chosen on val ({p.best_configuration.metric}); its "
        "test and unseen numbers are reported. Nothing is chosen on the split it reports.",
        f"Statistics: mean over replicates with a two-sided {p.confidence:.0%} Student-t "
        "interval (mean ± t·s/√n, s with ddof = 1); NaN values are dropped first; with one "
        "replicate the interval is undefined (shown as –). Differences between configurations "
        f"are paired by replicate and tested with a paired t-test (α = {p.alpha}); 'not "
        "separable' always comes from that test. Improvement % = per-replicate 100·(fine-tuned − "
        f"baseline)/baseline, only for metrics with a direction and a baseline above "
        f"{p.improvement_epsilon}.",
        f"Embedding-level figures (maps, galleries, confusion matrix) show run {figure_run}.",
    ]
    parts.append(H.bullet_list(items))
    parts.extend(H.note(n) for n in headline_notes)
    if finetuning_config:
        t = finetuning_config.get("training", {})
        m = finetuning_config.get("model", {})
        parts.append("<h3>Training of that run</h3>")
        parts.append(H.key_values([
            ("variant", finetuning_config.get("variant", "–")),
            ("backbone / weights", f"{m.get('name', '–')} / {m.get('weights') or 'random init'}"),
            ("image size / views", f"{m.get('image_size', '–')} / {'+'.join(m.get('views', []))}"),
            ("head / embedding dim", f"{m.get('head', '–')} / {m.get('embedding_dim', '–')}"),
            ("loss", (finetuning_config.get("loss") or {}).get("name", "–")),
            ("epochs / batch size", f"{t.get('epochs', '–')} / {t.get('batch_size', '–')}"),
            ("learning rates (backbone / head)", f"{t.get('lr_backbone', '–')} / {t.get('lr_head', '–')}"),
            ("training seed", t.get("seed", "–")),
        ]))
    return "\n".join(parts)


def _methods_display(methods: pd.DataFrame) -> pd.DataFrame:
    if methods.empty:
        return methods
    out = methods.drop(columns=["uses_true_k"], errors="ignore")
    out = out.assign(models=out["models"].map(lambda m: MODELS_TEXT.get(m, m)))
    return humanize(out)


# --------------------------------------------------------------------------- page
def render_report(tables: Mapping[str, pd.DataFrame], payloads: Mapping[str, Any],
                  split_summary: Mapping[str, Any] | None,
                  finetuning_config: Mapping[str, Any] | None,
                  parameters: Mapping[str, Any] | None,
                  params: ReportingParams | dict[str, Any],
                  generated_at: str | None = None,
                  data_info: Mapping[str, Any] | None = None,
                  matched: pd.DataFrame | None = None) -> str:
    """The whole HTML page.

    ``tables``: run_summary, comparison, factor_comparison, improvement, best_configuration,
    claims, clustering_methods (metrics_long optional). ``payloads``: training, comparison
    (``bars``/``heatmaps``), scatter, galleries, confusion, clip_layers (see :mod:`.builders`).
    ``data_info``: :func:`compcars_kedro.reporting.data_info.describe_data`. ``matched``: the
    matched-subsample table (optional).
    """
    p = reporting_params(params)
    parameters = dict(parameters or {})
    methods = tables["clustering_methods"]
    headline, headline_notes = resolve_headline(methods, p.headline.model_dump()) \
        if not methods.empty else (p.headline.model_dump(), ["no clustering results"])
    keys = (finetuning_config or {}).get("keys", {})
    figure_run = f"{keys.get('variant', '?')} (seed {keys.get('seed', '?')})" if keys else "–"
    metrics = [*p.metrics.retrieval, *p.metrics.clustering]
    main_metrics = list(dict.fromkeys([*p.bar_metrics, *p.heatmap_metrics]))
    comp = payloads.get("comparison") or {}
    clip = payloads.get("clip_layers") or {}
    n_configs = len(_configs(tables))
    several = n_configs > 1
    replicates = _replicates(tables.get("metrics_long"), tables["run_summary"], split_summary)

    body: dict[str, str] = {}
    body["answer"] = _answer_section(tables, headline, replicates, p)
    body["data"] = _data_section(data_info, split_summary)
    clip_claims = (pd.DataFrame(clip.get("claims", [])) if clip.get("present")
                   else clip_claims_of(None))  # one line per CLIP claim: study not run
    body["claims"] = _claims_section(tables.get("claims", pd.DataFrame()), clip_claims)
    if several:
        text, best = best_display(tables["best_configuration"])
        body["best-configuration"] = (H.paragraph(text) + H.table(best)) if text else H.note(
            "no val metric to choose a configuration on")
    else:
        body["best-configuration"] = H.paragraph(SINGLE_RUN)
    body["matched"] = matched_section(matched, tables["comparison"],
                                      _headline_config(tables)[0], headline)
    body["improvement"] = (H.paragraph(
        "Fine-tuned minus baseline per replicate, then mean ± t-interval over replicates and a "
        "paired t-test; % relative to the baseline (directed metrics, baseline above "
        f"{p.improvement_epsilon}).") + H.table(improvement_display(tables["improvement"],
                                                                   main_metrics)))
    body["protocol"] = _protocol_section(tables, headline, headline_notes, split_summary,
                                         finetuning_config, parameters, p, figure_run, replicates)
    body["run-summary"] = (H.paragraph("One row per run and source (full table: "
                                       "tables/run_summary.csv); training columns describe the "
                                       "fine-tuning (fine-tuned rows).")
                           + H.table(_runs_table(tables["run_summary"])))
    if several:
        body["comparison"] = (H.paragraph(
            "Mean ± t-interval half width over replicates per configuration. Full numbers "
            "(std, bounds, every metric) in comparison_by_configuration.csv.")
            + H.table(comparison_display(tables["comparison"], CONFIG_KEYS, metrics)))
    else:
        body["comparison"] = H.paragraph(SINGLE_RUN)
    fc = tables["factor_comparison"]
    fparts = []
    for factor in ("model", "loss", "views"):
        sub = fc[fc["factor"] == factor] if not fc.empty else fc
        if sub.empty or sub["level"].nunique() < 2:
            continue
        fparts.append(f"<h3>by {column_label(factor)}</h3>" + H.table(
            comparison_display(sub.rename(columns={"level": factor}), [factor], metrics, "n_runs")))
    body["factor-comparison"] = (H.paragraph(
        "Marginal means per level over every run (configuration x replicate) with that level; "
        "the interval mixes the other factors' spread with seed variance (coarse view; the "
        "claims section gives the paired comparisons).") + "\n".join(fparts)) if fparts else \
        H.paragraph(SINGLE_RUN if not several else "every factor has one level: nothing to "
                    "compare")
    body["clustering-methods"] = (H.paragraph(
        "Every reducer x clusterer x selection mode, averaged over runs (replicates and "
        "configurations pooled) -- how much the quoted method matters. Reference and oracle "
        "rows are labelled bounds, not results.") + H.table(_methods_display(methods)))
    body["training-curves"] = _figures(payloads.get("training"), "no training history")
    body["baseline-vs-finetuned"] = _figures(comp.get("bars"), "no comparison figure")
    body["heatmaps"] = _figures(comp.get("heatmaps"), "no heatmap") if several else \
        H.paragraph(SINGLE_RUN)
    body["embedding-scatter"] = _figures(payloads.get("scatter"), "no embedding map")
    body["cluster-galleries"] = _figures(payloads.get("galleries"), "no cluster gallery")
    body["confusion-matrix"] = _figures(payloads.get("confusion"), "confusion matrix skipped")
    if clip.get("present"):
        summary = pd.DataFrame(clip.get("summary", []))
        points = pd.DataFrame(clip.get("points", []))
        body["clip-layers"] = (H.paragraph(
            "Pearson r over runs between the number of trainable layers and each metric; best "
            "layer count = highest mean over seeds (ties: fewer layers); 0 layers = control "
            "(only the tower's final norm and projection train). Zero-shot accuracy is the text "
            "tower's own score (image MAP@R cannot move when only the text tower trains).")
            + H.table(humanize(summary)) + _figures(clip, "no CLIP layers figure")
            + "<h3>Per layer count</h3>" + H.table(humanize(points)))
    body["parameters"] = ("<h3>All parameters of this run (parameters*.yml after overrides)</h3>"
                          + H.preformatted(parameters)
                          + "<h3>Resolved fine-tuning configuration</h3>"
                          + H.preformatted(finetuning_config or {})
                          + "<h3>Split summary</h3>" + H.preformatted(split_summary or {}))
    notes = [*headline_notes]
    for key in ("training", "scatter", "galleries", "confusion", "clip_layers"):
        notes += list((payloads.get(key) or {}).get("notes", []))
    notes += list(comp.get("notes", []))
    notes += list(payloads.get("notes", []))
    body["notes"] = H.bullet_list(dict.fromkeys(notes)) if notes else H.paragraph("No warnings.")

    sections = [(sid, title, body[sid]) for sid, title in SECTIONS if sid in body]
    stamp = generated_at or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_runs = len(tables["run_summary"][list(RUN_KEYS)].drop_duplicates()) \
        if not tables["run_summary"].empty else 0
    subtitle = (f"Generated {stamp} · {n_runs} run(s), {n_configs} configuration(s) · "
                "compcars-kedro reporting pipeline")
    return H.document(p.title, sections, subtitle)


__all__ = ["OPTIONAL_SECTIONS", "SECTIONS", "SINGLE_RUN", "column_label", "comparison_display",
           "config_label", "headline_table", "humanize", "improvement_display", "render_report"]
