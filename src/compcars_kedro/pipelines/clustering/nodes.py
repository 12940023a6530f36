"""clustering nodes: reducer x clusterer grid per (source, reported split, selection mode)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from compcars_kedro.clustering.selection import run_grid
from compcars_kedro.datasets.embeddings import EmbeddingSet
from compcars_kedro.params import ClusteringParams, validate

logger = logging.getLogger(__name__)

#: reported splits: ``test`` holds seen models (never trained on, never used for selection),
#: ``unseen`` holds models held out of training entirely. ``val`` is only a selection split.
REPORTED = {"test": "seen", "unseen": "unseen"}


def cluster_embeddings(
    baseline_val: EmbeddingSet, baseline_test: EmbeddingSet, baseline_unseen: EmbeddingSet,
    finetuned_val: EmbeddingSet, finetuned_test: EmbeddingSet, finetuned_unseen: EmbeddingSet,
    parameters: dict[str, Any], finetuning_config: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy metrics table + cluster assignments for every source x split x mode x method.

    The labels of the reported split are passed to ``run_grid`` only to *score* the chosen
    clustering (and to give KMeans its labelled-reference k); selection never sees them.
    """
    p = validate(ClusteringParams, parameters, "clustering")
    sets = {"baseline": (baseline_val, baseline_test, baseline_unseen),
            "finetuned": (finetuned_val, finetuned_test, finetuned_unseen)}
    metrics, assignments = [], []
    for source, (val, test, unseen) in sets.items():
        for split, emb in (("test", test), ("unseen", unseen)):
            for mode in p.selection_modes:
                kwargs: dict[str, Any] = {}
                if mode == "transfer":
                    kwargs = {"X_select": val.vectors, "y_select": val.index["label"].to_numpy()}
                table, assign = _run_each(emb, p, mode, kwargs)
                keys = {**finetuning_config["keys"], "source": source,
                        "split": split, "models": REPORTED[split], "selection_split":
                        "val" if mode == "transfer" else (split if mode == "oracle" else "none")}
                metrics.append(table.assign(**keys))
                sample_ids = emb.index["sample_id"].to_numpy()
                assignments.append(assign.assign(sample_id=sample_ids[assign["row"].to_numpy()],
                                                 selection_mode=mode, **keys))
                logger.info("%s/%s/%s: best ARI %.3f", source, split, mode,
                            table["ari"].max() if "ari" in table else float("nan"))
    table = pd.concat(metrics, ignore_index=True)
    front = [*finetuning_config["keys"], "source", "split", "models", "selection_mode", "selection_split",
             "reducer", "clusterer"]
    table = table[front + [c for c in table.columns if c not in front]]
    return table, pd.concat(assignments, ignore_index=True)


def _run_each(emb: EmbeddingSet, p: ClusteringParams, mode: str, kwargs: dict[str, Any]
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The whole grid in one ``run_grid`` call (each reduction computed once); if a method
    cannot run on this split (e.g. fewer points than ``min_samples``), retry method by method
    so that method becomes a row with its ``error`` instead of failing the node."""
    common = {"seed": p.seed, "reducer_params": p.reducer_params or None,
              "grids": p.grids or None, "max_density_dims": p.max_density_dims,
              "sample_size": p.sample_size, **kwargs}
    y = emb.index["label"].to_numpy()
    try:
        table, assign = run_grid(emb.vectors, y, p.reducers, p.clusterers, mode, progress=True,
                                 **common)
        return table.assign(error=None), assign
    except Exception as exc:  # noqa: BLE001 - narrowed down below
        logger.warning("clustering grid failed (%s); retrying method by method", exc)
    tables, assigns = [], []
    for reducer in p.reducers:
        for clusterer in p.clusterers:
            try:
                table, assign = run_grid(emb.vectors, y, [reducer], [clusterer], mode,
                                         progress=False, **common)
                tables.append(table.assign(error=None))
                assigns.append(assign)
            except Exception as exc:  # noqa: BLE001 - recorded in the metrics table
                logger.warning("%s/%s (%s) skipped: %s", reducer, clusterer, mode, exc)
                tables.append(pd.DataFrame([{"reducer": reducer, "clusterer": clusterer,
                                             "selection_mode": mode,
                                             "error": f"{type(exc).__name__}: {exc}"}]))
    assign = pd.concat(assigns, ignore_index=True) if assigns else pd.DataFrame(
        columns=["row", "reducer", "clusterer", "cluster"])
    return pd.concat(tables, ignore_index=True), assign
