"""CLIP layers study: tower (vision, text) x number of trainable blocks (1..12)."""

from compcars_kedro.pipelines.clip_layers.pipeline import create_pipeline

__all__ = ["create_pipeline"]
