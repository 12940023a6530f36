"""reporting nodes: thin, pure wrappers over :mod:`compcars_kedro.reporting`.

Figure nodes return the figures (saved by the catalog as versioned PNGs) AND a small payload
(base64 PNGs + notes) that :func:`build_html_report` embeds; payloads are in-memory datasets.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from compcars_kedro.data.raw import RawSource
from compcars_kedro.reporting import builders
from compcars_kedro.reporting.data_info import describe_data
from compcars_kedro.reporting.params import reporting_params
from compcars_kedro.reporting.report import render_report
from compcars_kedro.types import CropsStore, EmbeddingSet

logger = logging.getLogger(__name__)

TABLE_NAMES = ("metrics_long", "run_summary", "comparison", "factor_comparison", "improvement",
               "best_configuration", "claims", "clustering_methods")


def build_report_tables(training_history: pd.DataFrame, retrieval_metrics: pd.DataFrame,
                        clustering_metrics: pd.DataFrame, parameters: dict[str, Any]
                        ) -> tuple[pd.DataFrame, ...]:
    """Tidy metrics, per-run summary, seed aggregates, improvements, best configurations and
    every clustering method (in :data:`TABLE_NAMES` order)."""
    tables, _ = builders.build_tables(training_history, retrieval_metrics, clustering_metrics,
                                      reporting_params(parameters))
    return tuple(tables[name] for name in TABLE_NAMES)


def plot_training_curves(training_history: pd.DataFrame, parameters: dict[str, Any]
                         ) -> tuple[dict[str, Figure], dict[str, Any]]:
    """One figure per run: losses, validation metrics, learning rates."""
    return builders.training_figures(training_history, parameters)


def plot_metric_comparisons(comparison: pd.DataFrame, parameters: dict[str, Any]
                            ) -> tuple[Figure, dict[str, Figure], dict[str, Any]]:
    """Baseline vs fine-tuned bars and model x loss heatmaps from the configuration table."""
    return builders.comparison_figures(comparison, parameters)


def plot_embedding_maps(baseline_test: EmbeddingSet, baseline_unseen: EmbeddingSet,
                        finetuned_test: EmbeddingSet, finetuned_unseen: EmbeddingSet,
                        cluster_assignments: pd.DataFrame, clustering_metrics: pd.DataFrame,
                        finetuning_config: dict[str, Any], parameters: dict[str, Any]
                        ) -> tuple[Figure, dict[str, Any]]:
    """2-D maps of the run's embeddings: true models vs the quoted clustering."""
    sets = builders.embeddings_by_key(baseline_test=baseline_test, baseline_unseen=baseline_unseen,
                                      finetuned_test=finetuned_test,
                                      finetuned_unseen=finetuned_unseen)
    return builders.scatter_figure(sets, cluster_assignments, clustering_metrics,
                                   finetuning_config, parameters)


def plot_cluster_galleries(crops: CropsStore, baseline_test: EmbeddingSet,
                           baseline_unseen: EmbeddingSet, finetuned_test: EmbeddingSet,
                           finetuned_unseen: EmbeddingSet, cluster_assignments: pd.DataFrame,
                           clustering_metrics: pd.DataFrame, finetuning_config: dict[str, Any],
                           parameters: dict[str, Any]) -> tuple[dict[str, Figure], dict[str, Any]]:
    """Thumbnails of the largest pure and mixed clusters (source chosen by parameters)."""
    p = reporting_params(parameters)
    sets = builders.embeddings_by_key(baseline_test=baseline_test, baseline_unseen=baseline_unseen,
                                      finetuned_test=finetuned_test,
                                      finetuned_unseen=finetuned_unseen)
    by_split = {split: emb for (source, split), emb in sets.items() if source == p.gallery.source}
    return builders.gallery_figures(crops, by_split, cluster_assignments, clustering_metrics,
                                    finetuning_config, p)


def plot_confusion_matrix(finetuned_val: EmbeddingSet, finetuned_test: EmbeddingSet,
                          finetuning_config: dict[str, Any], parameters: dict[str, Any]
                          ) -> tuple[Figure, dict[str, Any]]:
    """Nearest-val-centroid confusion matrix of a classification (``ce``) run, else a note."""
    fig, pay, info = builders.confusion_figure(finetuned_val, finetuned_test, finetuning_config,
                                               parameters)
    logger.info("confusion matrix: %s", info.get("status"))
    return fig, pay


def summarise_clip_layers(clip_layers_table: pd.DataFrame | None, parameters: dict[str, Any]
                          ) -> tuple[pd.DataFrame, pd.DataFrame, Figure, dict[str, Any]]:
    """Pearson r and best layer count per CLIP component, the paired claims (vision vs text,
    best layer count) and the figure; empty when no table is given."""
    summary, fig, pay = builders.clip_layers_outputs(clip_layers_table, parameters)
    claims = pd.DataFrame(pay.get("claims", []))
    return summary, claims, fig, pay


def describe_report_data(compcars_raw: RawSource, split_summary: dict[str, Any],
                         finetuning_config: dict[str, Any], run_summary: pd.DataFrame,
                         all_parameters: dict[str, Any]) -> dict[str, Any]:
    """Raw path, its kind (generated sample / CompCars / manifest CSV), counts and weights."""
    models = sorted(set(run_summary["model"])) if "model" in run_summary else []
    info = describe_data(compcars_raw, split_summary, finetuning_config, all_parameters, models)
    logger.info("report data: %s (%s)", info.get("raw_path"), info.get("kind"))
    return info


def build_html_report(run_summary: pd.DataFrame, comparison: pd.DataFrame,
                      factor_comparison: pd.DataFrame, improvement: pd.DataFrame,
                      best_configuration: pd.DataFrame, claims: pd.DataFrame,
                      clustering_methods: pd.DataFrame, metrics_long: pd.DataFrame,
                      training_images: dict[str, Any], comparison_images: dict[str, Any],
                      scatter_images: dict[str, Any], gallery_images: dict[str, Any],
                      confusion_images: dict[str, Any], clip_layers_images: dict[str, Any],
                      split_summary: dict[str, Any], finetuning_config: dict[str, Any],
                      data_info: dict[str, Any], all_parameters: dict[str, Any],
                      parameters: dict[str, Any],
                      matched_metrics: pd.DataFrame | None = None) -> str:
    """The self-contained HTML page (images embedded as base64 PNG); ``matched_metrics``: the
    clustering pipeline's seen-vs-unseen matched-subsample table (None: one line instead)."""
    tables = {"run_summary": run_summary, "comparison": comparison,
              "factor_comparison": factor_comparison, "improvement": improvement,
              "best_configuration": best_configuration, "claims": claims,
              "clustering_methods": clustering_methods, "metrics_long": metrics_long}
    payloads = {"training": training_images, "comparison": comparison_images,
                "scatter": scatter_images, "galleries": gallery_images,
                "confusion": confusion_images, "clip_layers": clip_layers_images}
    page = render_report(tables, payloads, split_summary, finetuning_config, all_parameters,
                         parameters, data_info=data_info, matched=matched_metrics)
    logger.info("HTML report: %.1f kB", len(page) / 1024)
    return page
