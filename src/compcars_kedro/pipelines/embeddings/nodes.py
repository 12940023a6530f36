"""embeddings nodes: extract L2-normalised embeddings per split, then retrieval metrics."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from compcars_kedro.data.views import build_view_data
from compcars_kedro.datasets.crops import CropsStore
from compcars_kedro.datasets.embeddings import EmbeddingSet
from compcars_kedro.device import current_device
from compcars_kedro.training.checkpoint import Checkpoint
from compcars_kedro.training.loop import (
    extract_embeddings,
    model_from_checkpoint,
    retrieval_metrics,
)

logger = logging.getLogger(__name__)

#: val selects clustering parameters (transfer mode); test (seen models) and unseen are reported.
EXTRACT_SPLITS = ("val", "test", "unseen")


def embed_splits(crops: CropsStore, multiview_samples: pd.DataFrame, checkpoint: Checkpoint,
                 parameters: dict[str, Any]) -> tuple[EmbeddingSet, EmbeddingSet, EmbeddingSet]:
    """Embeddings of val, test and unseen with the checkpoint's own views and fusion.

    The labels of seen splits use the checkpoint's training label map; unseen classes get
    labels after them (used only to score, never to choose anything).
    """
    device = current_device()
    model = model_from_checkpoint(checkpoint, device=device)
    views = list(checkpoint.meta["model_config"]["views"])
    class_ids = checkpoint.meta.get("class_ids") or []
    labels = {c: i for i, c in enumerate(class_ids)}
    stage = checkpoint.meta.get("stage", "model")
    out = []
    for split in EXTRACT_SPLITS:
        data, table = build_view_data(crops, multiview_samples, views, split, labels)
        vectors = extract_embeddings(model, data, batch_size=int(parameters.get("batch_size", 256)),
                                     device=device, progress=True)
        out.append(EmbeddingSet(vectors, table.assign(source=stage, split=split)))
        logger.info("%s embeddings of %s: %s", stage, split, vectors.shape)
    return tuple(out)  # type: ignore[return-value]


def retrieval_table(baseline_val: EmbeddingSet, baseline_test: EmbeddingSet,
                    baseline_unseen: EmbeddingSet, finetuned_val: EmbeddingSet,
                    finetuned_test: EmbeddingSet, finetuned_unseen: EmbeddingSet,
                    finetuning_config: dict[str, Any]) -> pd.DataFrame:
    """precision@1, R-precision, MAP@R per (source, split); query set = reference set, no self."""
    rows = []
    sets = {("baseline", "val"): baseline_val, ("baseline", "test"): baseline_test,
            ("baseline", "unseen"): baseline_unseen, ("finetuned", "val"): finetuned_val,
            ("finetuned", "test"): finetuned_test, ("finetuned", "unseen"): finetuned_unseen}
    for (source, split), emb in sets.items():
        metrics = retrieval_metrics(emb.vectors, emb.index["label"].to_numpy())
        rows.append({**finetuning_config["keys"], "source": source, "split": split,
                     "n_samples": len(emb.vectors), "n_classes": emb.index["label"].nunique(),
                     **metrics})
    table = pd.DataFrame(rows)
    logger.info("retrieval metrics:\n%s", table.to_string(index=False))
    return table
