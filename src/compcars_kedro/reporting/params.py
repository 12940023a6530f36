"""Validated parameters of the reporting pipeline (``reporting:`` in parameters_reporting.yml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from compcars_kedro.names import (
    FINETUNED,
    REPORTED_SPLITS,
    SOURCES,
    TEST,
    TRANSFER,
    UNSEEN,
    ReportedSplit,
    SelectionMode,
    Source,
)
from compcars_kedro.validation import StrictModel, validate


class HeadlineParams(StrictModel):
    """The clustering method quoted in summaries, bars, heatmaps, scatter plots and galleries.

    When the clustering table has no row for it (e.g. a run with ``reducers: [pca]``), the first
    available selection mode / reducer / clusterer is used instead and the report says so.
    """

    selection_mode: SelectionMode = TRANSFER
    reducer: str = "umap"
    clusterer: str = "hdbscan"


class MetricsParams(StrictModel):
    retrieval: list[str] = ["precision_at_1", "r_precision", "mean_average_precision_at_r"]
    clustering: list[str] = ["ari", "ami", "noise_fraction", "purity", "pct_pure_clusters",
                             "n_clusters"]


class SelectionRule(StrictModel):
    """How "the best configuration" is chosen: the highest mean VAL value of ``metric``.

    Only retrieval metrics exist on val (clustering runs on test and unseen only), so the
    metric must be one of them; the report then quotes the chosen configuration's test
    (seen models) and unseen numbers.
    """

    metric: Literal["precision_at_1", "r_precision", "mean_average_precision_at_r"] = \
        "mean_average_precision_at_r"
    source: Source = FINETUNED


class Claim(StrictModel):
    """One claim of the original study: level(s) ``a`` of ``factor`` beat level(s) ``b``."""

    name: str
    factor: Literal["model", "loss", "views"]
    a: list[str] = Field(min_length=1)
    b: list[str] = Field(min_length=1)


class ClaimsParams(StrictModel):
    metrics: list[str] = ["ari", "mean_average_precision_at_r"]
    source: Source = FINETUNED
    comparisons: list[Claim] = [
        Claim(name="ResNet50 vs ViT-B/32", factor="model", a=["resnet50"], b=["vitb32"]),
        Claim(name="metric learning vs classification", factor="loss",
              a=["arcface", "contrastive", "ntxent", "triplet", "multisimilarity"], b=["ce"]),
        Claim(name="front+rear vs front", factor="views", a=["front+rear"], b=["front"]),
    ]


class ScatterParams(StrictModel):
    reducer: Literal["umap", "tsne", "pca"] = "umap"
    reducer_params: dict[str, Any] = {}
    sources: list[Source] = list(SOURCES)
    splits: list[ReportedSplit] = list(REPORTED_SPLITS)
    max_points: int = Field(3000, ge=10)
    legend_max_classes: int = Field(12, ge=0)
    seed: int = 0


class GalleryParams(StrictModel):
    source: Source = FINETUNED
    splits: list[ReportedSplit] = [UNSEEN, TEST]
    n_pure: int = Field(4, ge=0)
    n_mixed: int = Field(4, ge=0)
    thumbnails_per_cluster: int = Field(8, ge=1, le=32)
    min_cluster_size: int = Field(2, ge=1)


class ConfusionParams(StrictModel):
    losses: list[str] = ["ce"]
    max_classes: int = Field(30, ge=2)


class ReportingParams(StrictModel):
    title: str = "CompCars: do embedding clusters recover car models?"
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    headline: HeadlineParams = HeadlineParams()
    metrics: MetricsParams = MetricsParams()
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    improvement_epsilon: float = Field(0.01, ge=0.0)
    bar_metrics: list[str] = ["mean_average_precision_at_r", "precision_at_1", "ari", "ami"]
    heatmap_metrics: list[str] = ["ari", "mean_average_precision_at_r"]
    best_configuration: SelectionRule = SelectionRule()
    claims: ClaimsParams = ClaimsParams()
    scatter: ScatterParams = ScatterParams()
    gallery: GalleryParams = GalleryParams()
    confusion: ConfusionParams = ConfusionParams()
    dpi: int = Field(100, ge=30, le=300)


def reporting_params(parameters: dict[str, Any] | ReportingParams | None) -> ReportingParams:
    """Validate ``params:reporting`` (unknown keys fail naming the key)."""
    if isinstance(parameters, ReportingParams):
        return parameters
    return validate(ReportingParams, dict(parameters or {}), "reporting")
