"""Figures, tables and one self-contained HTML report of every run in the results tables."""

from compcars_kedro.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
