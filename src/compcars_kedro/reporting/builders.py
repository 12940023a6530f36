"""High-level report builders: results tables and figures in, (tables | figures, payload) out.

A *payload* is what the HTML report needs from a figure step, JSON-able and small enough to
keep in memory: ``{"figures": [{"name", "caption", "png"}], "notes": [str]}`` (``png`` is
base64 text). The same :class:`~matplotlib.figure.Figure` objects are also returned so the
Kedro catalog saves them as versioned PNG files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from compcars_kedro.names import FINETUNED
from compcars_kedro.reporting import analysis, figures
from compcars_kedro.reporting.clip_layers import (
    CLIP_METRICS,
    clip_layers_points,
    clip_layers_summary,
)
from compcars_kedro.reporting.paired import best_by_val, clip_claims, factor_claims
from compcars_kedro.reporting.params import ReportingParams, reporting_params
from compcars_kedro.reporting.tables import (
    RUN_KEYS,
    clustering_methods,
    compare_configurations,
    compare_factors,
    improvement,
    metric_label,
    metrics_long,
    resolve_headline,
    run_summary,
)
from compcars_kedro.types import CropsStore, EmbeddingSet

logger = logging.getLogger(__name__)

Payload = dict[str, Any]
#: the headline table's metrics (ARI and AMI are shown with the noise fraction)
HEADLINE_METRICS = ("ari", "ami", "noise_fraction", "mean_average_precision_at_r")


def empty_payload(notes: list[str] | None = None) -> Payload:
    return {"figures": [], "notes": list(notes or [])}


def payload(figs: Mapping[str, Figure], captions: Mapping[str, str], notes: list[str] | None = None,
            dpi: int | None = None) -> Payload:
    """Encode ``figs`` (name -> Figure) for the HTML report, with one caption each."""
    return {"figures": [{"name": name, "caption": captions.get(name, ""),
                         "png": figures.figure_to_base64(fig, dpi)} for name, fig in figs.items()],
            "notes": list(notes or [])}


def run_keys(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run keys of ``finetuning_config`` (``{}`` when unknown)."""
    if not config:
        return {}
    return dict(config.get("keys", {}))


def describe_run(keys: Mapping[str, Any]) -> str:
    return f"{keys.get('variant', '?')} (seed {keys.get('seed', '?')})" if keys else "unknown run"


# --------------------------------------------------------------------------- tables
def build_tables(history: pd.DataFrame, retrieval: pd.DataFrame, clustering: pd.DataFrame,
                 params: ReportingParams | dict[str, Any]) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Every results table of the report, plus ``meta`` (resolved headline method, notes)."""
    p = reporting_params(params)
    headline, notes = resolve_headline(clustering, p.headline.model_dump())
    long = metrics_long(retrieval, clustering, headline, p.metrics.retrieval, p.metrics.clustering)
    comparison = compare_configurations(long, p.confidence)
    rule = p.best_configuration
    tables = {
        "metrics_long": long,
        "run_summary": run_summary(long, history),
        "comparison": comparison,
        "factor_comparison": compare_factors(long, p.confidence),
        "improvement": improvement(long, p.confidence, p.improvement_epsilon, p.alpha),
        "best_configuration": best_by_val(
            long, comparison, rule.metric, rule.source,
            list(dict.fromkeys([*HEADLINE_METRICS, *p.metrics.retrieval])), p.confidence,
            p.alpha),
        "claims": factor_claims(long, [c.model_dump() for c in p.claims.comparisons],
                                p.claims.metrics, p.claims.source, p.confidence, p.alpha),
        "clustering_methods": clustering_methods(clustering, p.confidence),
    }
    n_runs = long[list(RUN_KEYS)].drop_duplicates().shape[0] if not long.empty else 0
    logger.info("reporting tables: %d runs, headline clustering %s", n_runs, headline)
    for text in notes:
        logger.warning(text)
    return tables, {"headline": headline, "notes": notes}


# --------------------------------------------------------------------------- figures
def training_figures(history: pd.DataFrame, params: ReportingParams | dict[str, Any]
                     ) -> tuple[dict[str, Figure], Payload]:
    p = reporting_params(params)
    figs = figures.training_curves(history, p.dpi)
    if not figs:
        figs = {"no_training_history.png": figures.placeholder_figure("no training history", p.dpi)}
        return figs, empty_payload(["no training history: no run was fine-tuned"])
    captions = {name: "Training curves of run " + name.removesuffix(".png").replace("_seed", ", seed ")
                + ": losses, validation retrieval metrics (on val, used for early stopping) "
                  "and learning rates per epoch." for name in figs}
    return figs, payload(figs, captions)


def comparison_figures(comparison: pd.DataFrame, params: ReportingParams | dict[str, Any]
                       ) -> tuple[Figure, dict[str, Figure], Payload]:
    """Baseline-vs-fine-tuned bars and the model x loss heatmaps (one per ``views``)."""
    p = reporting_params(params)
    bars = figures.baseline_vs_finetuned(comparison, p.bar_metrics, p.dpi)
    notes = []
    single = comparison.empty or (comparison["model"].nunique() < 2
                                  and comparison["loss"].nunique() < 2)
    heat = {} if single else figures.metric_heatmaps(comparison, p.heatmap_metrics, FINETUNED,
                                                     p.dpi)
    if single:  # a 1 x 1 heatmap says nothing the tables do not
        heat = {"no_heatmap.png": figures.placeholder_figure(
            "one backbone and one loss: no model x loss heatmap", p.dpi)}
    elif not heat:
        heat = {"no_heatmap.png": figures.placeholder_figure("no fine-tuned metric", p.dpi)}
        notes.append("no fine-tuned results: heatmaps omitted")
    metrics = ", ".join(metric_label(m) for m in p.bar_metrics)
    bar_payload = payload({"baseline_vs_finetuned.png": bars}, {
        "baseline_vs_finetuned.png": f"{metrics} of the baseline (grey, before any training step) "
        "and the fine-tuned model (blue) per configuration, seen (test split) and unseen "
        "models; mean over seeds, error bars = t-interval (absent with one seed)."}, dpi=p.dpi)
    shown = {} if single else heat
    heat_payload = payload(shown, {name: "Fine-tuned model x loss: "
                                  + ", ".join(metric_label(m) for m in p.heatmap_metrics)
                                  + " (" + name.removeprefix("heatmap_").removesuffix(".png")
                                  + " views)" for name in heat}, dpi=p.dpi)
    return bars, heat, {"bars": bar_payload, "heatmaps": heat_payload, "notes": notes}


def _headline_row(clustering: pd.DataFrame, keys: Mapping[str, Any], source: str, split: str,
                  method: Mapping[str, str]) -> pd.Series | None:
    if clustering is None or clustering.empty:
        return None
    mask = ((clustering["source"] == source) & (clustering["split"] == split)
            & (clustering["selection_mode"] == method["selection_mode"])
            & (clustering["reducer"] == method["reducer"])
            & (clustering["clusterer"] == method["clusterer"]))
    for k, v in keys.items():
        if k in clustering:
            mask &= clustering[k].astype(str) == str(v)
    rows = clustering[mask]
    return rows.iloc[0] if len(rows) else None


def _method_text(method: Mapping[str, str]) -> str:
    return f"{method['clusterer']} on {method['reducer']} ({method['selection_mode']} selection)"


SPLIT_TEXT = {"test": "seen models (test split)", "unseen": "unseen models"}


def scatter_figure(embeddings: Mapping[tuple[str, str], EmbeddingSet],
                   assignments: pd.DataFrame, clustering: pd.DataFrame,
                   finetuning_config: Mapping[str, Any] | None,
                   params: ReportingParams | dict[str, Any]) -> tuple[Figure, Payload]:
    """2-D maps of the embeddings of the current run: true models vs headline clusters."""
    p = reporting_params(params)
    keys = run_keys(finetuning_config)
    method, _ = resolve_headline(clustering, p.headline.model_dump())  # fallback noted in tables
    notes: list[str] = []
    panels, used = [], set()
    for source in p.scatter.sources:
        for split in p.scatter.splits:
            emb = embeddings.get((source, split))
            if emb is None or len(emb.vectors) == 0:
                notes.append(f"no {source} embeddings of {split}: map omitted")
                continue
            rows = analysis.subsample(len(emb.vectors), p.scatter.max_points, p.scatter.seed)
            index = emb.index.iloc[rows].reset_index(drop=True)
            xy, reducer = analysis.project_2d(emb.vectors[rows], p.scatter.reducer,
                                              p.scatter.reducer_params, p.scatter.seed)
            used.add(reducer)
            clusters = analysis.assignment_for(assignments, keys, source, split, method)
            cl = None
            if len(clusters):
                cl = clusters.reindex(index["sample_id"]).fillna(-2).astype(int).to_numpy()
            row = _headline_row(clustering, keys, source, split, method)
            sub = _method_text(method)
            if row is not None:
                sub += f": ARI {row['ari']:.3f}, AMI {row['ami']:.3f}, noise {row['noise_fraction']:.0%}"
            sampled = f", {len(rows)} of {len(emb.vectors)} samples" if len(rows) < len(emb.vectors) else ""
            panels.append({"title": f"{source}, {SPLIT_TEXT.get(split, split)} [{reducer} 2-D{sampled}]",
                           "xy": xy, "names": analysis.class_names(index).to_numpy(),
                           "clusters": cl, "subtitle": sub})
    fig = figures.embedding_scatter(panels, p.scatter.legend_max_classes, p.dpi)
    if p.scatter.reducer not in used and used:
        notes.append(f"2-D maps use {', '.join(sorted(used))} instead of {p.scatter.reducer} "
                     f"(fewer than {analysis.MIN_POINTS_NONLINEAR} points or it failed)")
    caption = (f"Embeddings of run {describe_run(keys)} projected to 2-D with "
               f"{', '.join(sorted(used)) or p.scatter.reducer} (for viewing only; clustering "
               f"ran on its own input). Left: true car model. Right: clusters of "
               f"{_method_text(method)}; grey crosses are noise.")
    return fig, payload({"embedding_scatter.png": fig}, {"embedding_scatter.png": caption},
                        notes, p.dpi)


def gallery_figures(crops: CropsStore, embeddings: Mapping[str, EmbeddingSet],
                    assignments: pd.DataFrame, clustering: pd.DataFrame,
                    finetuning_config: Mapping[str, Any] | None,
                    params: ReportingParams | dict[str, Any]) -> tuple[dict[str, Figure], Payload]:
    """Per split: the largest pure and mixed clusters of the headline method, as thumbnails."""
    p = reporting_params(params)
    g = p.gallery
    keys = run_keys(finetuning_config)
    method, _ = resolve_headline(clustering, p.headline.model_dump())  # fallback noted in tables
    notes: list[str] = []
    figs: dict[str, Figure] = {}
    shown: dict[str, Figure] = {}
    captions: dict[str, str] = {}
    for split in g.splits:
        emb = embeddings.get(split)
        name = f"gallery_{g.source}_{split}.png"
        title = f"{g.source}, {SPLIT_TEXT.get(split, split)}: {_method_text(method)}"
        clusters = analysis.assignment_for(assignments, keys, g.source, split, method)
        if emb is None or not len(clusters):
            notes.append(f"no {g.source} cluster assignment of {split} for run "
                         f"{describe_run(keys)}: gallery omitted")
            continue
        rows = analysis.gallery_rows(crops, emb, clusters, g.n_pure, g.n_mixed,
                                     g.thumbnails_per_cluster, g.min_cluster_size)
        figs[name] = figures.cluster_gallery(rows, g.thumbnails_per_cluster, title, p.dpi)
        if not rows:
            notes.append(f"{title}: no non-noise cluster with at least {g.min_cluster_size} "
                         "samples, nothing to show")
            continue
        shown[name] = figs[name]
        n_pure = sum(r.kind == "pure" for r in rows)
        n_mixed = len(rows) - n_pure
        pure_text = (f"the {n_pure} largest pure clusters (green, one true model)" if n_pure
                     else "no pure cluster")
        mixed_text = (f"the {n_mixed} largest mixed clusters (red)" if n_mixed
                      else "no mixed cluster")
        captions[name] = (f"Run {describe_run(keys)}, {title}: {pure_text}; {mixed_text}. "
                          f"Each thumbnail is one sample (its views side by "
                          f"side) captioned with its TRUE model; mixed clusters show up to "
                          f"{g.thumbnails_per_cluster} samples round-robin over their models.")
    if not figs:
        figs = {"no_gallery.png": figures.placeholder_figure("no cluster gallery: " + "; ".join(notes), p.dpi)}
    return figs, payload(shown, captions, notes, p.dpi)


def confusion_figure(reference: EmbeddingSet | None, query: EmbeddingSet | None,
                     finetuning_config: Mapping[str, Any] | None,
                     params: ReportingParams | dict[str, Any]) -> tuple[Figure, Payload, dict[str, Any]]:
    """Nearest-val-centroid confusion matrix of the fine-tuned test embeddings (ce runs only).

    Returns (figure, payload, info); ``info["status"]`` is ``"computed"`` or ``"skipped"``.
    """
    p = reporting_params(params)
    keys = run_keys(finetuning_config)
    loss = keys.get("loss")
    if loss not in p.confusion.losses:
        text = (f"no classification run: the run in this catalog ({describe_run(keys)}) uses the "
                f"{loss!r} loss; a confusion matrix is drawn for losses {p.confusion.losses} only")
        return (figures.placeholder_figure(text, p.dpi), empty_payload([text]),
                {"status": "skipped", "reason": text})
    if reference is None or query is None or len(query.vectors) == 0:
        text = "no fine-tuned val/test embeddings: confusion matrix skipped"
        return figures.placeholder_figure(text, p.dpi), empty_payload([text]), {"status": "skipped",
                                                                              "reason": text}
    result = analysis.nearest_centroid_confusion(reference, query, p.confusion.max_classes)
    title = (f"{describe_run(keys)}: nearest-centroid classification of fine-tuned test "
             f"embeddings (centroids = val)\naccuracy {result.accuracy:.3f} on {result.n_test} "
             f"samples, {result.n_classes} models")
    fig = figures.confusion_figure(result.matrix, title, p.dpi)
    notes = [result.note] if result.note else []
    caption = ("Confusion matrix of a nearest-class-centroid classifier: every test sample of the "
               "fine-tuned model is assigned to the seen model whose mean val embedding (cosine) "
               "is closest. It measures the embedding, not the trained classification head. "
               f"Accuracy {result.accuracy:.3f}. Rows are true models, normalised to 1.")
    info = {"status": "computed", "accuracy": result.accuracy, "n_test": result.n_test,
            "n_classes": result.n_classes, "shown_classes": result.shown_classes}
    return fig, payload({"confusion_matrix.png": fig}, {"confusion_matrix.png": caption}, notes,
                        p.dpi), info


def clip_layers_outputs(table: pd.DataFrame | None, params: ReportingParams | dict[str, Any]
                        ) -> tuple[pd.DataFrame, Figure, Payload]:
    """Summary CSV, figure and payload of the CLIP layers study (empty when no table)."""
    p = reporting_params(params)
    present = table is not None and isinstance(table, pd.DataFrame) and len(table) > 0
    summary, fig = clip_layers_summary(table if present else None, p.confidence)
    if not present:
        return summary, fig, {"figures": [], "notes": [], "present": False}
    points = clip_layers_points(table, p.confidence)
    claims = clip_claims(table, p.confidence, p.alpha)
    shown = ", ".join(metric_label(m) for m in CLIP_METRICS if m in table)
    pay = payload({"clip_layers.png": fig}, {"clip_layers.png": (
        f"{shown} against the number of trainable CLIP layers, per component (0 = control: "
        "only the final norm and projection train); mean over seeds, error bars = "
        "t-interval.")}, dpi=p.dpi)
    pay.update({"present": True, "summary": json.loads(summary.to_json(orient="records")),
                "points": json.loads(points.to_json(orient="records")),
                "claims": json.loads(claims.to_json(orient="records"))})
    return summary, fig, pay


def embeddings_by_key(**sets: EmbeddingSet | None) -> dict[tuple[str, str], EmbeddingSet]:
    """``baseline_test=...`` keyword sets -> ``{("baseline", "test"): set}``."""
    out = {}
    for name, emb in sets.items():
        if emb is not None:
            source, split = name.split("_", 1)
            out[(source, split)] = emb
    return out
