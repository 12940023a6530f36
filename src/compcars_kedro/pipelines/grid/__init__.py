"""Experiment grid: the finetuning -> embeddings -> clustering chain per variant (namespaced)."""

from compcars_kedro.pipelines.grid.pipeline import create_pipeline

__all__ = ["create_pipeline"]
