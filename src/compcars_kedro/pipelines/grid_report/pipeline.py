"""grid_report: tables/figures aggregated over all grid variants (mean +- CI over seeds).

Aggregates read the collected ``grid_*`` tables; the embedding-level figures (2-D maps,
galleries, confusion matrix) show one representative variant, the first of the grid
(``grid.report_variant`` overrides it). Output: ``data/08_reporting/grid_report/report.html``.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from compcars_kedro.grid import expand_grid, load_study_parameters
from compcars_kedro.names import (
    FINETUNED,
    REPORTED_SPLITS,
    SOURCES,
    VAL,
    embeddings_name,
    namespaced,
    study_table,
)
from compcars_kedro.pipelines.reporting.pipeline import create_namespaced_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    grid = load_study_parameters().get("grid", {})
    variants = expand_grid(grid)
    if not variants:
        return Pipeline([])
    v = grid.get("report_variant") or variants[0].name
    used = {VAL: (FINETUNED,), **dict.fromkeys(REPORTED_SPLITS, SOURCES)}  # what the figures read
    return create_namespaced_pipeline("grid", {
        **{t: study_table("grid", t)
           for t in ("training_history", "retrieval_metrics", "clustering_metrics")},
        "finetuning_config": namespaced("config", v),
        "cluster_assignments": namespaced("cluster_assignments", v),
        "matched_metrics": study_table("grid", "matched_metrics"),  # none per variant: loads None
        **{embeddings_name(s, p): embeddings_name(s, p, v)
           for p, sources in used.items() for s in sources},
    })
