"""Assemble the one-file HTML report from the results tables and the figure payloads.

The page opens with the answer (one paragraph, one headline table), then the data it ran on;
the evidence follows. Section ids are stable (:data:`SECTIONS`); tests and links rely on them.
The ``clip-layers`` section appears only when a CLIP layers table was given. Sections that
need several configurations say so in one line when there is only one.

This module assembles the page; each section's body comes from :mod:`.sections` (and
:mod:`.matched`), the display tables from :mod:`.display`, the wording from :mod:`.wording`
and the HTML building blocks (and the page's CSS) from :mod:`.html`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compcars_kedro.reporting import html as H
from compcars_kedro.reporting.display import (
    best_display,
    comparison_display,
    configs_of,
    improvement_display,
    methods_display,
    runs_table,
)
from compcars_kedro.reporting.matched import matched_section
from compcars_kedro.reporting.paired import clip_claims as clip_claims_of
from compcars_kedro.reporting.params import ReportingParams, reporting_params
from compcars_kedro.reporting.sections import (
    answer_section,
    claims_section,
    data_section,
    figures,
    headline_config,
    protocol_section,
    replicates_text,
)
from compcars_kedro.reporting.tables import CONFIG_KEYS, RUN_KEYS, resolve_headline
from compcars_kedro.reporting.wording import column_label, humanize

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
    n_configs = len(configs_of(tables))
    several = n_configs > 1
    replicates = replicates_text(tables.get("metrics_long"), tables["run_summary"], split_summary)

    body: dict[str, str] = {
        "answer": answer_section(tables, headline, replicates, p),
        "data": data_section(data_info, split_summary),
        "claims": _claims(tables, payloads),
        "best-configuration": _best_configuration(tables, several),
        "matched": matched_section(matched, tables["comparison"], headline_config(tables)[0],
                                   headline),
        "improvement": _improvement(tables, p),
        "protocol": protocol_section(tables, headline, headline_notes, split_summary,
                                     finetuning_config, parameters, p,
                                     _figure_run(finetuning_config), replicates),
        **_table_sections(tables, p, several),
        **_figure_sections(payloads, several),
        "parameters": _parameters(parameters, finetuning_config, split_summary),
        "notes": _notes(headline_notes, payloads),
    }
    sections = [(sid, title, body[sid]) for sid, title in SECTIONS if sid in body]
    return H.document(p.title, sections, _subtitle(tables, n_configs, generated_at))


def _figure_run(finetuning_config: Mapping[str, Any] | None) -> str:
    """``<variant> (seed <seed>)`` of the run the embedding-level figures show."""
    keys = (finetuning_config or {}).get("keys", {})
    return f"{keys.get('variant', '?')} (seed {keys.get('seed', '?')})" if keys else "–"


def _claims(tables: Mapping[str, pd.DataFrame], payloads: Mapping[str, Any]) -> str:
    clip = payloads.get("clip_layers") or {}
    clip_claims = (pd.DataFrame(clip.get("claims", [])) if clip.get("present")
                   else clip_claims_of(None))  # one line per CLIP claim: study not run
    return claims_section(tables.get("claims", pd.DataFrame()), clip_claims)


def _best_configuration(tables: Mapping[str, pd.DataFrame], several: bool) -> str:
    if not several:
        return H.paragraph(SINGLE_RUN)
    text, best = best_display(tables["best_configuration"])
    return (H.paragraph(text) + H.table(best)) if text else H.note(
        "no val metric to choose a configuration on")


def _improvement(tables: Mapping[str, pd.DataFrame], p: ReportingParams) -> str:
    main_metrics = list(dict.fromkeys([*p.bar_metrics, *p.heatmap_metrics]))
    return (H.paragraph(
        "Fine-tuned minus baseline per replicate, then mean ± t-interval over replicates and a "
        "paired t-test; % relative to the baseline (directed metrics, baseline above "
        f"{p.improvement_epsilon}).") + H.table(improvement_display(tables["improvement"],
                                                                   main_metrics)))


def _table_sections(tables: Mapping[str, pd.DataFrame], p: ReportingParams, several: bool
                    ) -> dict[str, str]:
    """run-summary, comparison, factor-comparison and clustering-methods."""
    metrics = [*p.metrics.retrieval, *p.metrics.clustering]
    body = {"run-summary": (H.paragraph("One row per run and source (full table: "
                                        "tables/run_summary.csv); training columns describe the "
                                        "fine-tuning (fine-tuned rows).")
                            + H.table(runs_table(tables["run_summary"])))}
    if several:
        body["comparison"] = (H.paragraph(
            "Mean ± t-interval half width over replicates per configuration. Full numbers "
            "(std, bounds, every metric) in comparison_by_configuration.csv.")
            + H.table(comparison_display(tables["comparison"], CONFIG_KEYS, metrics)))
    else:
        body["comparison"] = H.paragraph(SINGLE_RUN)
    body["factor-comparison"] = _factor_comparison(tables["factor_comparison"], metrics, several)
    body["clustering-methods"] = (H.paragraph(
        "Every reducer x clusterer x selection mode, averaged over runs (replicates and "
        "configurations pooled) -- how much the quoted method matters. Reference and oracle "
        "rows are labelled bounds, not results.")
        + H.table(methods_display(tables["clustering_methods"])))
    return body


def _factor_comparison(fc: pd.DataFrame, metrics: Sequence[str], several: bool) -> str:
    fparts = []
    for factor in ("model", "loss", "views"):
        sub = fc[fc["factor"] == factor] if not fc.empty else fc
        if sub.empty or sub["level"].nunique() < 2:
            continue
        fparts.append(f"<h3>by {column_label(factor)}</h3>" + H.table(
            comparison_display(sub.rename(columns={"level": factor}), [factor], metrics, "n_runs")))
    if not fparts:
        return H.paragraph(SINGLE_RUN if not several else "every factor has one level: nothing "
                           "to compare")
    return H.paragraph(
        "Marginal means per level over every run (configuration x replicate) with that level; "
        "the interval mixes the other factors' spread with seed variance (coarse view; the "
        "claims section gives the paired comparisons).") + "\n".join(fparts)


def _figure_sections(payloads: Mapping[str, Any], several: bool) -> dict[str, str]:
    """Training curves, bars, heatmaps, maps, galleries, confusion matrix (and CLIP layers)."""
    comp = payloads.get("comparison") or {}
    body = {
        "training-curves": figures(payloads.get("training"), "no training history"),
        "baseline-vs-finetuned": figures(comp.get("bars"), "no comparison figure"),
        "heatmaps": figures(comp.get("heatmaps"), "no heatmap") if several else
        H.paragraph(SINGLE_RUN),
        "embedding-scatter": figures(payloads.get("scatter"), "no embedding map"),
        "cluster-galleries": figures(payloads.get("galleries"), "no cluster gallery"),
        "confusion-matrix": figures(payloads.get("confusion"), "confusion matrix skipped"),
    }
    clip = payloads.get("clip_layers") or {}
    if clip.get("present"):
        body["clip-layers"] = _clip_layers(clip)
    return body


def _clip_layers(clip: Mapping[str, Any]) -> str:
    summary = pd.DataFrame(clip.get("summary", []))
    points = pd.DataFrame(clip.get("points", []))
    return (H.paragraph(
        "Pearson r over runs between the number of trainable layers and each metric; best "
        "layer count = highest mean over seeds (ties: fewer layers); 0 layers = control "
        "(only the tower's final norm and projection train). Zero-shot accuracy is the text "
        "tower's own score (image MAP@R cannot move when only the text tower trains).")
        + H.table(humanize(summary)) + figures(clip, "no CLIP layers figure")
        + "<h3>Per layer count</h3>" + H.table(humanize(points)))


def _parameters(parameters: Mapping[str, Any], finetuning_config: Mapping[str, Any] | None,
                split_summary: Mapping[str, Any] | None) -> str:
    return ("<h3>All parameters of this run (parameters*.yml after overrides)</h3>"
            + H.preformatted(parameters)
            + "<h3>Resolved fine-tuning configuration</h3>"
            + H.preformatted(finetuning_config or {})
            + "<h3>Split summary</h3>" + H.preformatted(split_summary or {}))


def _notes(headline_notes: Sequence[str], payloads: Mapping[str, Any]) -> str:
    """Every warning of the run once: headline choice, then each figure payload's notes."""
    notes = [*headline_notes]
    for key in ("training", "scatter", "galleries", "confusion", "clip_layers"):
        notes += list((payloads.get(key) or {}).get("notes", []))
    notes += list((payloads.get("comparison") or {}).get("notes", []))
    notes += list(payloads.get("notes", []))
    return H.bullet_list(dict.fromkeys(notes)) if notes else H.paragraph("No warnings.")


def _subtitle(tables: Mapping[str, pd.DataFrame], n_configs: int, generated_at: str | None
              ) -> str:
    stamp = generated_at or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_runs = len(tables["run_summary"][list(RUN_KEYS)].drop_duplicates()) \
        if not tables["run_summary"].empty else 0
    return (f"Generated {stamp} · {n_runs} run(s), {n_configs} configuration(s) · "
            "compcars-kedro reporting pipeline")


__all__ = ["OPTIONAL_SECTIONS", "SECTIONS", "SINGLE_RUN", "TITLES", "render_report"]
