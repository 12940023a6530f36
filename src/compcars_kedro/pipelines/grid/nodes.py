"""Study nodes: per-variant config and status, collection across variants, CLIP layers table."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.grid import Variant, deep_merge
from compcars_kedro.names import FINETUNED, TRANSFER, UNSEEN, VAL
from compcars_kedro.params import FinetuningParams
from compcars_kedro.types import VariantFailed
from compcars_kedro.validation import validate

logger = logging.getLogger(__name__)


def variant_config(variant: Variant, embedding_dim: int | None, models: dict[str, Any],
                   losses: dict[str, Any], training: dict[str, Any],
                   finetuning: dict[str, Any]) -> dict[str, Any]:
    """The shared settings with this variant's selectors (and overrides) applied."""
    shared = deep_merge({"models": models, "losses": losses, "training": training},
                        variant.overrides)
    training_cfg = {**shared["training"], "seed": variant.seed}
    params = validate(FinetuningParams, {
        "model": variant.model, "loss": variant.loss, "views": variant.views,
        "embedding_dim": None if variant.loss == "clip" else embedding_dim,
        "models": shared["models"], "losses": shared["losses"], "training": training_cfg,
        "finetuning": finetuning}, f"grid variant {variant.name}")
    config = params.resolve()
    config["variant"] = variant.name
    config["keys"] = variant.keys
    return config


def split_for_seed(split_seed: int, validated: pd.DataFrame, parameters: dict[str, Any],
                   image_hashes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                        dict[str, Any]]:
    """``split_dataset`` with ``data_engineering.seed`` replaced by the grid's ``split_seed``."""
    from compcars_kedro.pipelines.data_engineering.nodes import split_dataset

    return split_dataset(validated, {**(parameters or {}), "seed": split_seed}, image_hashes)


def variant_status(variant: Variant, config: Any, finetuning_metrics: Any,
                   retrieval_metrics: Any, clustering_metrics: Any) -> dict[str, Any]:
    """``ok`` with the headline numbers, or ``failed`` with the failing node and its error."""
    for value in (config, finetuning_metrics, retrieval_metrics, clustering_metrics):
        if isinstance(value, VariantFailed):
            return {**variant.keys, **value.to_json(), "study": variant.study}
    return {**variant.keys, "status": "ok",
            "best_epoch": finetuning_metrics.get("epoch"),
            "n_clustering_rows": len(clustering_metrics)}


def collect_results(results: dict[str, pd.DataFrame], *statuses: dict[str, Any]
                    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every variant's tables on disk (this run's and earlier runs'), plus the status table."""
    status = results["status"]
    failed = status.loc[status.get("status", pd.Series(dtype=str)) != "ok"] if len(status) else status
    logger.info("study results: %d variants, %d failed%s", len(status), len(failed),
                "".join(f"\n  {r['variant']}: {r.get('error')}" for _, r in failed.iterrows()))
    return (status, results["training_history"], results["retrieval_metrics"],
            results["clustering_metrics"])


def clip_layers_table(status: pd.DataFrame, retrieval: pd.DataFrame,
                      clustering: pd.DataFrame, parameters: dict[str, Any]) -> pd.DataFrame:
    """One row per (component, trainable layers): fine-tuned MAP@R, best-transfer ARI and, for
    image-text runs, zero-shot accuracy (the only one of the three the text tower can move).

    MAP@R is taken on ``parameters.split`` (default ``unseen``); ARI is the ``transfer``-selected
    clustering of the same split with ``parameters.reducer`` / ``parameters.clusterer``.
    """
    split = parameters.get("split", UNSEEN)
    if retrieval.empty:
        return pd.DataFrame(columns=["component", "trainable_layers",
                                     "mean_average_precision_at_r", "ari"])
    r = retrieval.loc[(retrieval["source"] == FINETUNED) & (retrieval["split"] == split)]
    c = clustering.loc[(clustering["source"] == FINETUNED) & (clustering["split"] == split)
                       & (clustering["selection_mode"] == parameters.get("selection_mode", TRANSFER))
                       & (clustering["reducer"] == parameters.get("reducer", "pca"))
                       & (clustering["clusterer"] == parameters.get("clusterer", "hdbscan"))]
    keys = ["variant", "component", "trainable_layers", "seed"]
    extra = [c for c in ("zero_shot_accuracy",) if c in r]  # the text tower's own score
    table = r[keys + ["mean_average_precision_at_r", "precision_at_1", *extra]].merge(
        c[["variant", "ari", "ami"]], on="variant", how="left")
    # the same metrics on val (seen models): the best layer count is chosen there, never on
    # the reported split (reporting.clip_layers / reporting.paired use ``val_<metric>``)
    v = retrieval.loc[(retrieval["source"] == FINETUNED) & (retrieval["split"] == VAL)]
    val_cols = [m for m in ("mean_average_precision_at_r", "zero_shot_accuracy") if m in v]
    if split != VAL and val_cols:
        table = table.merge(v[["variant", *val_cols]].rename(
            columns={m: f"val_{m}" for m in val_cols}), on="variant", how="left")
    table = table.sort_values(["component", "trainable_layers"]).reset_index(drop=True)
    for component, group in table.groupby("component"):
        if len(group) > 2:
            rho = np.corrcoef(group["trainable_layers"], group["mean_average_precision_at_r"])[0, 1]
            logger.info("clip layers (%s): Pearson r(layers, MAP@R) = %.3f", component, rho)
    return table
