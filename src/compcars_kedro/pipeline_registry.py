"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; ``__default__`` chains the main study."""
    pipelines = find_pipelines(raise_errors=True)
    default_order = ["data_engineering", "finetuning", "embeddings", "clustering", "reporting"]
    pipelines["__default__"] = sum(
        (pipelines[name] for name in default_order if name in pipelines), Pipeline([])
    )
    return pipelines
