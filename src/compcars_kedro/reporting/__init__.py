"""Reporting library: results tables, figures and the self-contained HTML report.

Plain functions over pandas tables, embeddings and the crops store (no Kedro imports); the
``reporting`` pipeline wraps them in nodes.
"""

from compcars_kedro.reporting.clip_layers import clip_layers_summary, pearson_r
from compcars_kedro.reporting.paired import (
    best_by_val,
    clip_claims,
    factor_claims,
    paired_difference,
)
from compcars_kedro.reporting.report import SECTIONS, render_report
from compcars_kedro.reporting.tables import (
    aggregate,
    compare_configurations,
    compare_factors,
    improvement,
    metrics_long,
    resolve_headline,
    run_summary,
    t_interval,
)

__all__ = ["SECTIONS", "aggregate", "best_by_val", "clip_claims", "clip_layers_summary",
           "compare_configurations", "compare_factors", "factor_claims", "improvement",
           "metrics_long", "paired_difference", "pearson_r", "render_report", "resolve_headline",
           "run_summary", "t_interval"]
