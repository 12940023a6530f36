"""Cluster baseline and fine-tuned embeddings of seen (test) and unseen models, honestly."""

from compcars_kedro.pipelines.clustering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
