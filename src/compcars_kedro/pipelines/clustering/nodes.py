"""clustering nodes: reducer x clusterer grid per (source, reported split, selection mode),
and seen vs unseen on matched subsamples."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.clustering.clusterers import CLUSTERERS
from compcars_kedro.clustering.matched import matched_draws
from compcars_kedro.clustering.run import run_grid
from compcars_kedro.names import (
    BASELINE,
    FINETUNED,
    INTERNAL,
    ORACLE,
    REFERENCE,
    TEST,
    TRANSFER,
    UNSEEN,
    VAL,
)
from compcars_kedro.params import ClusteringParams
from compcars_kedro.training.metrics import retrieval_metrics
from compcars_kedro.types import EmbeddingSet
from compcars_kedro.validation import validate

logger = logging.getLogger(__name__)

#: reported splits: ``test`` holds seen models (never trained on, never used for selection),
#: ``unseen`` holds models held out of training entirely. ``val`` is only a selection split.
REPORTED = {TEST: "seen", UNSEEN: "unseen"}


def cluster_embeddings(
    baseline_val: EmbeddingSet, baseline_test: EmbeddingSet, baseline_unseen: EmbeddingSet,
    finetuned_val: EmbeddingSet, finetuned_test: EmbeddingSet, finetuned_unseen: EmbeddingSet,
    parameters: dict[str, Any], finetuning_config: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy metrics table + cluster assignments for every source x split x mode x method.

    The labels of the reported split are passed to ``run_grid`` only to *score* the chosen
    clustering (and to give KMeans its labelled-reference k); selection never sees them.
    KMeans with the true k appears once per (source, split), as selection ``reference``.
    """
    p = validate(ClusteringParams, parameters, "clustering")
    sets = {BASELINE: (baseline_val, baseline_test, baseline_unseen),
            FINETUNED: (finetuned_val, finetuned_test, finetuned_unseen)}
    metrics, assignments = [], []
    for source, (val, test, unseen) in sets.items():
        cache: dict[tuple, Any] = {}  # reductions shared by the modes and splits of a source
        for split, emb in ((TEST, test), (UNSEEN, unseen)):
            table, assign = cluster_split(emb, val, p, p.reducers, p.clusterers, cache, split)
            keys = {**finetuning_config["keys"], "source": source, "split": split,
                    "models": REPORTED[split]}
            metrics.append(table.assign(**keys))
            sample_ids = emb.index["sample_id"].to_numpy()
            assignments.append(assign.assign(sample_id=sample_ids[assign["row"].to_numpy(dtype=np.int64)],
                                             **keys))
            logger.info("%s/%s: best ARI %.3f", source, split,
                        table["ari"].max() if "ari" in table else float("nan"))
    table = pd.concat(metrics, ignore_index=True)
    front = [*finetuning_config["keys"], "source", "split", "models", "selection_mode",
             "selection_split", "reducer", "clusterer"]
    table = table[front + [c for c in table.columns if c not in front]]
    return table, pd.concat(assignments, ignore_index=True)


def cluster_split(emb: EmbeddingSet, val: EmbeddingSet, p: ClusteringParams,
                  reducers: list[str], clusterers: list[str],
                  cache: dict[tuple, Any] | None = None, split: str = "evaluated"
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every selection mode on one evaluated set; true-k clusterers once, as ``reference``.

    Each method runs exactly once: one that fails becomes a row with its ``error`` while the
    others are unaffected (``run_grid(errors="record")``).
    """
    true_k = [c for c in clusterers if CLUSTERERS[c].uses_true_k]
    chosen = [c for c in clusterers if c not in true_k]
    y = emb.index["label"].to_numpy()
    common = {"seed": p.seed, "reducer_params": p.reducer_params or None,
              "grids": p.grids or None, "max_density_dims": p.max_density_dims,
              "sample_size": p.sample_size, "transfer_sizes": p.transfer_sizes,
              "n_jobs": p.n_jobs, "errors": "record", "reduction_cache": cache,
              "progress": True}
    tables, assigns = [], []
    for i, mode in enumerate(p.selection_modes):
        methods = chosen + (true_k if i == 0 else [])
        if not methods:
            continue
        kwargs: dict[str, Any] = {}
        if mode == TRANSFER:
            kwargs = {"X_select": val.vectors, "y_select": val.index["label"].to_numpy()}
        table, assign = run_grid(emb.vectors, y, reducers, methods, mode, **common, **kwargs)
        split_of = {TRANSFER: VAL, ORACLE: split, INTERNAL: "none"}
        tables.append(table.assign(selection_split=np.where(
            table["selection_mode"] == REFERENCE, "none", split_of[mode])))
        is_ref = assign["clusterer"].isin(true_k).to_numpy()
        assigns.append(assign.assign(selection_mode=np.where(is_ref, REFERENCE, mode)))
    assign = pd.concat(assigns, ignore_index=True) if assigns else pd.DataFrame(
        columns=["row", "reducer", "clusterer", "cluster", "selection_mode"])
    return pd.concat(tables, ignore_index=True), assign


#: columns of the ``matched_metrics`` table, before the metric columns
MATCHED_FRONT = ("source", "split", "models", "draw", "n_classes", "n_samples", "kind",
                 "selection_mode", "selection_split", "reducer", "clusterer")


def matched_metrics(
    baseline_val: EmbeddingSet, baseline_test: EmbeddingSet, baseline_unseen: EmbeddingSet,
    finetuned_val: EmbeddingSet, finetuned_test: EmbeddingSet, finetuned_unseen: EmbeddingSet,
    parameters: dict[str, Any], finetuning_config: dict[str, Any],
) -> pd.DataFrame:
    """Seen (test) vs unseen metrics on matched subsamples, one row per draw and method.

    Each draw (``clustering.matched.draws``, seeded) takes the same number of classes from
    test and unseen, with the same per-class sample counts (:func:`matched_draws`); both
    sources use the same draws (paired). Rows of ``kind="retrieval"`` hold the retrieval
    metrics (``retrieval_metrics`` of the training loop); rows of ``kind="clustering"`` one
    clustering method (same selection rules as the full table; transfer still selects on
    the full val split). Mean and spread over draws: :func:`summarize_matched`.
    """
    p = validate(ClusteringParams, parameters, "clustering")
    m = p.matched
    clusterers = m.clusterers if m.clusterers is not None else p.clusterers
    sets = {BASELINE: (baseline_val, baseline_test, baseline_unseen),
            FINETUNED: (finetuned_val, finetuned_test, finetuned_unseen)}
    rows: list[pd.DataFrame] = []
    for source, (val, test, unseen) in sets.items():
        try:
            draws = matched_draws(test.index["label"].to_numpy(),
                                  unseen.index["label"].to_numpy(), n_draws=m.draws,
                                  seed=m.seed, min_class_size=m.min_class_size)
        except ValueError as exc:  # too few classes to match: say so, no rows
            logger.warning("%s: no matched subsample (test vs unseen): %s", source, exc)
            continue
        cache: dict[tuple, Any] = {}
        for d, (idx_test, idx_unseen) in enumerate(draws):
            for split, emb, idx in ((TEST, test, idx_test), (UNSEEN, unseen, idx_unseen)):
                sub = EmbeddingSet(emb.vectors[idx], emb.index.iloc[idx].reset_index(drop=True))
                y = np.array(sub.index["label"].to_numpy())
                front = {"source": source, "split": split, "models": REPORTED[split],
                         "draw": d, "n_classes": int(len(np.unique(y))), "n_samples": len(y)}
                rows.append(pd.DataFrame([{**front, "kind": "retrieval",
                                           **retrieval_metrics(np.array(sub.vectors), y)}]))
                if clusterers and m.reducers:
                    table, _ = cluster_split(sub, val, p, m.reducers, clusterers, cache, split)
                    rows.append(table.assign(**front, kind="clustering"))
            logger.info("%s: matched draw %d/%d (%d classes, %d samples per split)", source,
                        d + 1, m.draws, len(np.unique(test.index["label"].to_numpy()[idx_test])),
                        len(idx_test))
    table = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=list(MATCHED_FRONT))).assign(**finetuning_config["keys"])
    front_cols = [*finetuning_config["keys"], *MATCHED_FRONT]
    for col in front_cols:
        if col not in table:
            table[col] = None
    return table[front_cols + [c for c in table.columns if c not in front_cols]]
