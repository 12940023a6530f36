"""grid_report: tables/figures aggregated over all grid variants (mean +- CI over seeds).

Aggregates read the collected ``grid_*`` tables; the embedding-level figures (2-D maps,
galleries, confusion matrix) show one representative variant, the first of the grid
(``grid.report_variant`` overrides it). Output: ``data/08_reporting/grid_report/report.html``.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from compcars_kedro.grid import expand_grid, load_study_parameters
from compcars_kedro.pipelines.reporting.pipeline import create_namespaced_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    grid = load_study_parameters().get("grid", {})
    variants = expand_grid(grid)
    if not variants:
        return Pipeline([])
    v = grid.get("report_variant") or variants[0].name
    used = {"val": ("finetuned",), "test": ("baseline", "finetuned"),
            "unseen": ("baseline", "finetuned")}  # what the reporting figures read
    return create_namespaced_pipeline("grid", {
        "training_history": "grid_training_history",
        "retrieval_metrics": "grid_retrieval_metrics",
        "clustering_metrics": "grid_clustering_metrics",
        "finetuning_config": f"{v}.config",
        "cluster_assignments": f"{v}.cluster_assignments",
        "matched_metrics": "grid_matched_metrics",  # none per variant yet: loads None
        **{f"embeddings_{s}_{p}": f"{v}.embeddings_{s}_{p}"
           for p, sources in used.items() for s in sources},
    })
