"""clip_layers pipeline: one CLIP variant per (tower, trainable layers), then the layers table."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from compcars_kedro.grid import expand_clip_layers, load_study_parameters
from compcars_kedro.names import study_table
from compcars_kedro.pipelines.grid.nodes import clip_layers_table
from compcars_kedro.pipelines.grid.pipeline import study_pipeline
from compcars_kedro.pipelines.reporting.pipeline import create_pipeline as reporting_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    study = load_study_parameters().get("clip_layers", {})
    return study_pipeline(expand_clip_layers(study), "clip_layers") + Pipeline([
        node(clip_layers_table,
             [*(study_table("clip_layers", t)
                for t in ("status", "retrieval_metrics", "clustering_metrics")),
              "params:clip_layers"],
             "clip_layers_table", name="clip_layers_table", tags=["study"]),
    ]) + reporting_pipeline().only_nodes("summarise_clip_layers")  # table + figure of the study
