"""finetuning nodes: validate the run configuration, then train (thin wrappers over training/)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from compcars_kedro.data.fingerprint import check_versions
from compcars_kedro.data.views import build_view_data, label_map, with_splits
from compcars_kedro.device import current_device
from compcars_kedro.names import FINETUNED, TRAIN, VAL
from compcars_kedro.params import FinetuningParams
from compcars_kedro.training import LossConfig, ModelConfig, TrainingConfig
from compcars_kedro.training.checkpoint import Checkpoint, work_dir_lock
from compcars_kedro.training.fit import fit
from compcars_kedro.types import CropsStore
from compcars_kedro.validation import validate

logger = logging.getLogger(__name__)


def resolve_config(model: str, loss: str, views: str, embedding_dim: int | None,
                   models: dict[str, Any], losses: dict[str, Any], training: dict[str, Any],
                   finetuning: dict[str, Any]) -> dict[str, Any]:
    """Selectors + per-model/per-loss settings -> one validated, JSON-able run configuration."""
    params = validate(FinetuningParams, {
        "model": model, "loss": loss, "views": views, "embedding_dim": embedding_dim,
        "models": models, "losses": losses, "training": training, "finetuning": finetuning,
    }, "parameters")
    config = params.resolve()
    logger.info("finetuning variant %s", config["variant"])
    return config


def _configs(config: dict[str, Any]) -> tuple[ModelConfig, LossConfig, TrainingConfig]:
    return (ModelConfig.model_validate(config["model"]), LossConfig.model_validate(config["loss"]),
            TrainingConfig.model_validate(config["training"]))


def finetune(crops: CropsStore, multiview_samples: pd.DataFrame, config: dict[str, Any],
             image_splits: pd.DataFrame | None = None,
             ) -> tuple[Checkpoint, Checkpoint, Checkpoint, pd.DataFrame, dict[str, Any]]:
    """Train on ``train``, validate on ``val`` each epoch; return baseline, best, last checkpoints.

    The baseline checkpoint is the starting backbone (pretrained weights, or the seeded random
    init) snapshotted inside ``fit`` before the first step, without projection or classifier:
    its embedding is the fused backbone features, the same for every loss of this backbone,
    views, weights and seed. ``training.ddp.world_size > 1`` trains with DDP (``fit`` starts
    the processes). ``image_splits`` (when given) decides each image's split (see
    ``with_splits``).
    """
    crops = with_splits(crops, image_splits)
    model_cfg, loss_cfg, train_cfg = _configs(config)
    fingerprints = check_versions(crops=crops, multiview_samples=multiview_samples)
    views = model_cfg.views
    template = model_cfg.clip.prompt_template if loss_cfg.name == "clip" else None
    index = crops.index
    labels = label_map(index.loc[index["split"] == TRAIN, "class_id"])
    train, _ = build_view_data(crops, multiview_samples, views, TRAIN, labels, template)
    val, _ = build_view_data(crops, multiview_samples, views, VAL, labels, template)
    if set(val.labels.tolist()) - set(range(len(labels))):
        raise ValueError("val split has classes absent from train; re-run data_engineering")
    class_ids = sorted(labels, key=labels.get)
    names = index.drop_duplicates("class_id").set_index("class_id")["class_name"]
    label_names = [str(names[c]) for c in class_ids]
    device = current_device()
    logger.info("training %s on %s: %d train / %d val samples, %d classes, views=%s",
                config["variant"], device, len(train), len(val), len(labels), "+".join(views))

    run = config["run"]
    work_dir = Path(run["work_dir"]) / config["variant"]
    with work_dir_lock(work_dir):  # one run per variant's work dir
        result = fit(model_cfg, loss_cfg, train_cfg, train, val, num_classes=len(labels),
                     device=device, work_dir=work_dir, resume=bool(run["resume"]),
                     label_names=label_names)
    baseline, best = result.baseline, result.best
    baseline.meta.update({"variant": config["variant"], "class_ids": class_ids,
                          "data_fingerprints": fingerprints})
    best.meta.update({"variant": config["variant"], "stage": FINETUNED,
                      "class_ids": class_ids, "data_fingerprints": fingerprints})
    result.last.meta["data_fingerprints"] = fingerprints
    history = result.history.assign(**config["keys"])
    metrics = {**config["keys"], **{k: float(v) for k, v in result.best_metrics.items()},
               "early_stopping_metric": result.monitor, "ddp_world_size": train_cfg.ddp.world_size,
               "n_train": len(train), "n_val": len(val), "n_classes": len(labels)}
    return baseline, best, result.last, history, metrics


def package_model(checkpoint: Checkpoint) -> Checkpoint:
    """The fine-tuned checkpoint, handed to the MLflow model dataset (pyfunc, no pickle)."""
    return checkpoint
