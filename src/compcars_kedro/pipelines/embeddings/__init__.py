"""Baseline and fine-tuned embeddings of the val, test (seen models) and unseen splits."""

from compcars_kedro.pipelines.embeddings.pipeline import create_pipeline

__all__ = ["create_pipeline"]
