"""The reporting pipeline over every variant of the experiment grid."""

from compcars_kedro.pipelines.grid_report.pipeline import create_pipeline

__all__ = ["create_pipeline"]
