"""Fine-tune a backbone (model x loss x views) on the crops store."""

from compcars_kedro.pipelines.finetuning.pipeline import create_pipeline

__all__ = ["create_pipeline"]
