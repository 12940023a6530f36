"""Assemble the one-file HTML report from the results tables and the figure payloads.

Section ids are stable (:data:`SECTIONS`); tests and links rely on them. The ``clip-layers``
section appears only when a CLIP layers table was given.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compcars_kedro.reporting import html as H
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
    ("summary", "Summary"),
    ("protocol", "Protocol"),
    ("run-summary", "Per-run summary"),
    ("comparison", "Comparison by configuration"),
    ("factor-comparison", "Comparison by model, loss and views"),
    ("improvement", "Improvement: baseline to fine-tuned"),
    ("best-configuration", "Best configuration"),
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

MODE_TEXT = {
    "internal": "internal: parameters chosen without any label (silhouette of non-noise points "
                "penalised by the noise fraction) on the reported split itself",
    "transfer": "transfer: parameters chosen on the labelled val split of seen models (AMI), "
                "frozen, then applied once to the reported split",
    "oracle": "oracle: parameters tuned on the reported split's own labels -- an upper bound, "
              "not a result",
}


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


def _num(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _mean_ci(mean: float, half: float, digits: int = 3) -> str:
    """``mean ± half`` (no half width when undefined; ``–`` when there is no mean)."""
    if pd.isna(mean):
        return "–"
    return _num(mean, digits) + ("" if pd.isna(half) else f" ± {_num(half, digits)}")


def comparison_display(comparison: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                       n_col: str = "n_seeds") -> pd.DataFrame:
    """Wide, readable view: one row per ``by`` + source + models, ``mean ± half width`` cells."""
    if comparison.empty:
        return pd.DataFrame()
    c = comparison[comparison["metric"].isin(metrics)].copy()
    if c.empty:
        return pd.DataFrame()
    c["cell"] = [_mean_ci(m, h) for m, h in zip(c["mean"], c["ci_half_width"], strict=True)]
    idx = [*by, "source", "models"]
    wide = c.pivot_table(index=idx, columns="metric", values="cell", aggfunc="first")
    wide = wide[[m for m in metrics if m in wide.columns]]
    wide.columns = [metric_label(m) for m in wide.columns]
    n = c.groupby(idx)[n_col].max().rename(n_col)
    return wide.join(n).reset_index()


def improvement_display(improvement: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    if improvement.empty:
        return pd.DataFrame()
    i = improvement[improvement["metric"].isin(metrics)].copy()
    i["metric"] = i["metric"].map(metric_label)
    i["change"] = [_mean_ci(a, h) for a, h in zip(i["abs"], i["abs_ci_half_width"], strict=True)]
    i["change %"] = [_mean_ci(a, h, 1) for a, h in zip(i["pct"], i["pct_ci_half_width"], strict=True)]
    cols = [*CONFIG_KEYS, "models", "metric", "n_seeds", "baseline", "finetuned", "change",
            "change %"]
    return i[cols]


def _split_table(split_summary: Mapping[str, Any] | None) -> pd.DataFrame:
    if not split_summary:
        return pd.DataFrame()
    images = split_summary.get("images_per_split", {})
    classes = split_summary.get("classes_per_split", {})
    pairs = split_summary.get("pairs_per_split", {})
    role = {"train": "training", "val": "early stopping + transfer selection (seen models)",
            "test": "reported: seen models", "unseen": "reported: unseen (held-out) models"}
    splits = list(dict.fromkeys([*images, *classes, *pairs]))
    return pd.DataFrame([{"split": s, "images": images.get(s), "models (classes)": classes.get(s),
                          "samples (view pairs)": pairs.get(s), "role": role.get(s, "")}
                         for s in splits])


def _seeds_table(run_summary: pd.DataFrame) -> pd.DataFrame:
    if run_summary.empty:
        return pd.DataFrame()
    runs = run_summary[list(RUN_KEYS)].drop_duplicates()
    return (runs.groupby(list(CONFIG_KEYS))["seed"]
            .agg(n_seeds="nunique", seeds=lambda s: ", ".join(str(v) for v in sorted(set(s))))
            .reset_index())


def _summary_section(tables: Mapping[str, pd.DataFrame], headline: Mapping[str, str],
                     p: ReportingParams) -> str:
    run_summary = tables["run_summary"]
    best = tables["best_configuration"]
    imp = tables["improvement"]
    runs = run_summary[list(RUN_KEYS)].drop_duplicates() if not run_summary.empty else pd.DataFrame()
    n_configs = runs[list(CONFIG_KEYS)].drop_duplicates().shape[0] if len(runs) else 0
    parts = [H.key_values([
        ("runs", len(runs)), ("configurations (model / loss / views)", n_configs),
        ("seeds", ", ".join(str(s) for s in sorted(runs["seed"].unique())) if len(runs) else "–"),
        ("clustering method quoted", f"{headline['clusterer']} on {headline['reducer']}, "
                                     f"{headline['selection_mode']} selection"),
    ])]
    items = []
    for _, b in best.iterrows():
        if pd.isna(b.get("configuration")):
            items.append(f"{b['criterion']}: no result")
            continue
        ci = ("" if pd.isna(b["ci_low"]) else f", {p.confidence:.0%} CI [{b['ci_low']:.3f}, "
              f"{b['ci_high']:.3f}]")
        text = f"{b['criterion']}: {b['configuration']} = {b['mean']:.3f} (n = {int(b['n_seeds'])} seed(s){ci})"
        sel = imp[(imp["metric"] == b["metric"]) & (imp["models"] == b["models"])]
        for k in CONFIG_KEYS:
            sel = sel[sel[k].astype(str) == str(b[k])]
        if len(sel):
            r = sel.iloc[0]
            pct = "" if pd.isna(r["pct"]) else f", {r['pct']:+.1f}%"
            text += (f"; baseline {r['baseline']:.3f} -> fine-tuned {r['finetuned']:.3f} "
                     f"({r['abs']:+.3f}{pct})")
        if isinstance(b.get("runner_up"), str):
            sep = b.get("separable")
            separable = not pd.isna(sep) and str(sep).lower() == "true"
            text += (f"; runner-up {b['runner_up']} ({b['runner_up_mean']:.3f}), "
                     + ("intervals separate" if separable
                        else "not separable at this sample size"))
        items.append(text)
    if items:
        parts.append("<h3>Best configurations</h3>" + H.bullet_list(items))
    parts.append(H.paragraph(
        "Seen models = the test split (car models used in training, images never seen); unseen "
        "models = car models held out of training entirely. Every number is measured on "
        "embeddings; clustering scores compare clusters with the true car models."))
    return "\n".join(parts)


def _protocol_section(tables: Mapping[str, pd.DataFrame], headline: Mapping[str, str],
                      headline_notes: Sequence[str], split_summary: Mapping[str, Any] | None,
                      finetuning_config: Mapping[str, Any] | None, parameters: Mapping[str, Any],
                      p: ReportingParams, figure_run: str) -> str:
    methods = tables["clustering_methods"]
    parts = ["<h3>Data and splits</h3>"]
    split = _split_table(split_summary)
    parts.append(H.table(split) if not split.empty else H.note("no split summary given"))
    if split_summary:
        excluded = split_summary.get("excluded") or {}
        if excluded:
            parts.append(H.paragraph("Excluded images: " + ", ".join(
                f"{k}: {v}" for k, v in excluded.items())))
        dp = split_summary.get("params", {})
        if dp:
            parts.append(H.key_values([(k, v) for k, v in dp.items() if not isinstance(v, dict)]))
    parts.append("<h3>Runs and seeds</h3>")
    parts.append(H.table(_seeds_table(tables["run_summary"])))
    seeds = [("data split seed", (split_summary or {}).get("params", {}).get("seed", "–")),
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
        "Baseline = the same network before any training step (pretrained weights or the "
        "seeded random initialisation); fine-tuned = the checkpoint with the best val MAP@R.",
        f"Clustering grid: reducers {', '.join(reducers) or '–'}; clusterers "
        f"{', '.join(clusterers) or '–'} (kmeans is given the true number of models: a "
        "labelled reference, not a discovery result).",
        *[f"Selection mode {MODE_TEXT.get(m, m)}" for m in modes],
        f"Quoted clustering method (summary, comparisons, maps, galleries): {headline['clusterer']}"
        f" on {headline['reducer']}, {headline['selection_mode']} selection.",
        f"Statistics: mean over seeds with a two-sided {p.confidence:.0%} Student-t interval "
        "(mean ± t·s/√n, s with ddof = 1); NaN values are dropped first; with one seed the "
        "interval is undefined (shown as –). Improvement % = per-seed 100·(fine-tuned − "
        "baseline)/|baseline|, averaged over seeds.",
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


def render_report(tables: Mapping[str, pd.DataFrame], payloads: Mapping[str, Any],
                  split_summary: Mapping[str, Any] | None,
                  finetuning_config: Mapping[str, Any] | None,
                  parameters: Mapping[str, Any] | None,
                  params: ReportingParams | dict[str, Any],
                  generated_at: str | None = None) -> str:
    """The whole HTML page.

    ``tables``: run_summary, comparison, factor_comparison, improvement, best_configuration,
    clustering_methods. ``payloads``: training, comparison (``bars``/``heatmaps``), scatter,
    galleries, confusion, clip_layers (see :mod:`.builders`).
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

    body: dict[str, str] = {}
    body["summary"] = _summary_section(tables, headline, p)
    body["protocol"] = _protocol_section(tables, headline, headline_notes, split_summary,
                                         finetuning_config, parameters, p, figure_run)
    body["run-summary"] = (H.paragraph("One row per run and source; <models>_<metric> columns; "
                                       "training columns describe the fine-tuning (finetuned rows).")
                           + H.table(tables["run_summary"]))
    body["comparison"] = (H.paragraph("Mean ± t-interval half width over seeds per configuration. "
                                      "Full numbers (std, bounds, every metric) in "
                                      "comparison_by_configuration.csv.")
                          + H.table(comparison_display(tables["comparison"], CONFIG_KEYS, metrics)))
    fc = tables["factor_comparison"]
    fparts = []
    for factor in ("model", "loss", "views"):
        sub = fc[fc["factor"] == factor] if not fc.empty else fc
        fparts.append(f"<h3>by {factor}</h3>" + H.table(
            comparison_display(sub.rename(columns={"level": factor}), [factor], metrics, "n_runs")))
    body["factor-comparison"] = (H.paragraph(
        "Marginal means per level over every run (configuration x seed) with that level; the "
        "interval mixes the other factors' spread with seed variance (coarse view).")
        + "\n".join(fparts))
    body["improvement"] = (H.paragraph("Fine-tuned minus baseline per seed, then mean ± t-interval "
                                       "over seeds; % relative to the baseline.")
                           + H.table(improvement_display(tables["improvement"], main_metrics)))
    bc = tables["best_configuration"]
    body["best-configuration"] = (H.paragraph(
        "Highest mean over seeds per criterion; 'separable' = the winner's interval lies above "
        "the runner-up's.") + H.table(bc.drop(columns=list(CONFIG_KEYS), errors="ignore")))
    body["clustering-methods"] = (H.paragraph(
        "Every reducer x clusterer x selection mode, averaged over runs (seeds and "
        "configurations pooled) -- how much the quoted method matters.")
        + H.table(methods))
    body["training-curves"] = _figures(payloads.get("training"), "no training history")
    body["baseline-vs-finetuned"] = _figures(comp.get("bars"), "no comparison figure")
    body["heatmaps"] = _figures(comp.get("heatmaps"), "no heatmap")
    body["embedding-scatter"] = _figures(payloads.get("scatter"), "no embedding map")
    body["cluster-galleries"] = _figures(payloads.get("galleries"), "no cluster gallery")
    body["confusion-matrix"] = _figures(payloads.get("confusion"), "confusion matrix skipped")
    if clip.get("present"):
        summary = pd.DataFrame(clip.get("summary", []))
        points = pd.DataFrame(clip.get("points", []))
        body["clip-layers"] = (H.paragraph(
            "Pearson r over runs between the number of trainable layers and each metric; best "
            "layer count = highest mean over seeds (ties: fewer layers).")
            + H.table(summary) + _figures(clip, "no CLIP layers figure")
            + "<h3>Per layer count</h3>" + H.table(points))
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
    subtitle = f"Generated {stamp} · {n_runs} run(s) · compcars-kedro reporting pipeline"
    return H.document(p.title, sections, subtitle)


__all__ = ["OPTIONAL_SECTIONS", "SECTIONS", "comparison_display", "config_label",
           "improvement_display", "render_report"]
