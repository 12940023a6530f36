"""embeddings nodes: extract L2-normalised embeddings per split, then retrieval metrics."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from compcars_kedro.data.fingerprint import check_versions
from compcars_kedro.data.views import build_view_data, with_splits
from compcars_kedro.device import current_device
from compcars_kedro.names import BASELINE, EVAL_SPLITS, SOURCES, checkpoint_name
from compcars_kedro.training.checkpoint import Checkpoint
from compcars_kedro.training.inference import extract_embeddings, model_from_checkpoint
from compcars_kedro.training.metrics import retrieval_metrics
from compcars_kedro.types import CropsStore, EmbeddingSet

logger = logging.getLogger(__name__)


def embed_splits(crops: CropsStore, multiview_samples: pd.DataFrame, checkpoint: Checkpoint,
                 parameters: dict[str, Any], image_splits: pd.DataFrame | None = None,
                 ) -> tuple[EmbeddingSet, EmbeddingSet, EmbeddingSet]:
    """Embeddings of val, test and unseen with the checkpoint's own views and fusion.

    A ``baseline`` checkpoint embeds with its backbone's fused (concatenated) features, without
    projection or classifier, so every loss of one backbone shares one baseline.

    The labels of seen splits use the checkpoint's training label map; unseen classes get
    labels after them (used only to score, never to choose anything). ``image_splits`` (when
    given) decides each image's split (see ``with_splits``).
    """
    crops = with_splits(crops, image_splits)
    check_versions(crops=crops, multiview_samples=multiview_samples)
    stage = checkpoint.meta.get("stage", "model")
    check_versions(rerun="kedro run --pipelines finetuning (it trains on the current crops)",
                   crops=crops, multiview_samples=multiview_samples,
                   **{checkpoint_name(stage): checkpoint})
    device = current_device()
    model = model_from_checkpoint(checkpoint, device=device)
    views = list(checkpoint.meta["model_config"]["views"])
    class_ids = checkpoint.meta.get("class_ids") or []
    labels = {c: i for i, c in enumerate(class_ids)}
    if stage == BASELINE:  # the starting backbone's fused features, never a head at init
        model = model.backbone_only()
    out = []
    for split in EVAL_SPLITS:  # val selects clustering parameters; test and unseen are reported
        data, table = build_view_data(crops, multiview_samples, views, split, labels)
        vectors = extract_embeddings(model, data, batch_size=int(parameters.get("batch_size", 256)),
                                     device=device, progress=True)
        zero_shot = zero_shot_predictions(model, checkpoint, table, vectors, device)
        if zero_shot is not None:
            table = table.assign(zero_shot_class_id=zero_shot)
        out.append(EmbeddingSet(vectors, table.assign(source=stage, split=split)))
        logger.info("%s embeddings of %s: %s", stage, split, vectors.shape)
    return tuple(out)  # type: ignore[return-value]


def zero_shot_predictions(model: Any, checkpoint: Checkpoint, table: pd.DataFrame,
                          vectors: np.ndarray, device: Any) -> np.ndarray | None:
    """CLIP image-text runs: the class whose prompt is nearest to each image embedding.

    Scores the text tower (the clustered image embedding never sees a prompt): the prompts of the
    split's own classes are encoded with the run's tokenizer and each image gets the class of
    the most similar prompt. ``None`` for non-CLIP runs, multi-view runs (the fused vector is
    not in the text space) or when the tokenizer is not available offline.
    """
    meta = checkpoint.meta
    cfg = meta["model_config"]
    if cfg["name"] != "clip" or (meta.get("loss_config") or {}).get("name") != "clip" \
            or len(cfg["views"]) != 1:
        return None
    from compcars_kedro.training.tokenizer import BPETokenizer, build_prompt, build_tokenizer

    text_cfg = model.backbone.clip.config.text_config
    max_length = min(int(cfg["clip"]["max_length"]), int(text_cfg.max_position_embeddings))
    try:
        if meta.get("tokenizer_json"):
            tokenizer = BPETokenizer.from_str(meta["tokenizer_json"], max_length=max_length)
        else:
            tokenizer = build_tokenizer(cfg["clip"]["tokenizer"], weights=cfg["weights"],
                                        corpus=[], vocab_size=int(text_cfg.vocab_size),
                                        max_length=max_length)
    except Exception as exc:  # noqa: BLE001 - zero-shot is optional
        logger.warning("no tokenizer for zero-shot evaluation: %s", exc)
        return None
    model.backbone.set_eos_token_id(tokenizer.eos_token_id)
    classes = table.drop_duplicates("class_id").reset_index(drop=True)
    prompts = [build_prompt(cfg["clip"]["prompt_template"], make=r.make, model=r.model,
                            type=r.type) for r in classes.itertuples()]
    ids, mask = tokenizer.encode(prompts)
    with torch.no_grad():
        text = model.encode_text(ids.to(device), mask.to(device)).float().cpu().numpy()
    return classes["class_id"].to_numpy()[np.argmax(vectors @ text.T, axis=1)]


def retrieval_table(baseline_val: EmbeddingSet, baseline_test: EmbeddingSet,
                    baseline_unseen: EmbeddingSet, finetuned_val: EmbeddingSet,
                    finetuned_test: EmbeddingSet, finetuned_unseen: EmbeddingSet,
                    finetuning_config: dict[str, Any]) -> pd.DataFrame:
    """precision@1, R-precision, MAP@R per (source, split); query set = reference set, no self."""
    rows = []
    given = (baseline_val, baseline_test, baseline_unseen,
             finetuned_val, finetuned_test, finetuned_unseen)  # source-major, as embedding_names
    sets = dict(zip(itertools.product(SOURCES, EVAL_SPLITS), given, strict=True))
    for (source, split), emb in sets.items():
        metrics = retrieval_metrics(emb.vectors, emb.index["label"].to_numpy())
        if "zero_shot_class_id" in emb.index:  # CLIP image-text runs only
            metrics["zero_shot_accuracy"] = float(
                (emb.index["zero_shot_class_id"] == emb.index["class_id"]).mean())
        rows.append({**finetuning_config["keys"], "source": source, "split": split,
                     "n_samples": len(emb.vectors), "n_classes": emb.index["label"].nunique(),
                     **metrics})
    table = pd.DataFrame(rows)
    logger.info("retrieval metrics:\n%s", table.to_string(index=False))
    return table
