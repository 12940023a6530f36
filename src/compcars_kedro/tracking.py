"""Turn the pipelines' tables into MLflow metric dicts (saved by kedro-mlflow datasets).

Format: ``{key: [{"value": v, "step": s}, ...]}`` or ``{key: {"value": v, "step": 0}}`` as
``kedro_mlflow.io.metrics.MlflowMetricsHistoryDataset`` expects; each catalog entry adds its own
explicit ``prefix`` (``finetuning``, ``retrieval``, ``clustering``), so keys are namespaced.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from compcars_kedro.training.metrics import RETRIEVAL_METRICS

HISTORY_METRICS = ("train_loss", "val_loss", "precision_at_1", "r_precision",
                   "mean_average_precision_at_r", "accuracy", "lr_backbone", "lr_head",
                   "train_img_per_s")
CLUSTER_METRICS = ("ari", "ami", "nmi", "purity", "noise_fraction", "n_clusters")


def _ok(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def training_metrics(history: pd.DataFrame, best: dict[str, Any]) -> dict[str, Any]:
    """Per-epoch curves (step = epoch) and the best epoch's metrics (``best.<name>``)."""
    out: dict[str, Any] = {}
    for name in HISTORY_METRICS:
        if name in history:
            points = [{"value": float(v), "step": int(e)}
                      for e, v in zip(history["epoch"], history[name], strict=True) if _ok(v)]
            if points:
                out[f"epoch.{name}"] = points
    for name, value in best.items():
        if _ok(value):
            out[f"best.{name}"] = {"value": float(value), "step": 0}
    return out


def retrieval_mlflow_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """``<source>.<split>.<metric>`` for every retrieval row."""
    return {f"{r['source']}.{r['split']}.{m}": {"value": float(r[m]), "step": 0}
            for _, r in table.iterrows() for m in RETRIEVAL_METRICS if _ok(r[m])}


def clustering_mlflow_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """``<source>.<seen|unseen>.<mode>.<reducer>.<clusterer>.<metric>`` for every row."""
    out = {}
    for _, r in table.iterrows():
        base = f"{r['source']}.{r['models']}.{r['selection_mode']}.{r['reducer']}.{r['clusterer']}"
        for m in CLUSTER_METRICS:
            if _ok(r[m]):
                out[f"{base}.{m}"] = {"value": float(r[m]), "step": 0}
    return out
