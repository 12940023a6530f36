"""Setup steps of a :class:`~compcars_kedro.training.trainer.Trainer`: the checks of a run's
configuration and data, the optimizer / scheduler, the validation loader and the CLIP
prompts' tokens.

Called by ``Trainer.__init__`` in its fixed order (the model is built right after
``seed_everything``; nothing here draws random numbers from the global generators).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .config import TrainingConfig
from .data import EpochBatchSampler, ViewData, make_loader
from .losses import LOSS_REGISTRY, LossConfig, validate_combination
from .models import EmbeddingModel, ModelConfig, param_groups
from .schedule import build_scheduler
from .seed import derive_seed
from .state import early_stopping_monitor
from .tokenizer import TextTokenizer, build_tokenizer

#: token ids and attention mask of a set's prompts
Tokens = tuple[torch.Tensor, torch.Tensor]


def check_run(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainingConfig,
    train: ViewData,
    val: ViewData | None,
    *,
    num_classes: int,
    validates: bool,
) -> tuple[Any, str]:
    """Reject an inconsistent run before anything is built; returns the loss's registry entry
    and the metric early stopping watches. ``validates``: this process validates (under DDP
    only rank 0)."""
    validate_combination(model_cfg, loss_cfg, train_cfg)
    for name, d in (("train", train), ("val", val)):
        if d is not None and d.num_views != model_cfg.num_views:
            raise ValueError(
                f"{name} ViewData has {d.num_views} view(s) but model.views={model_cfg.views}"
            )
        if d is not None and len(d) and int(d.labels.max()) >= num_classes:
            raise ValueError(f"{name} labels exceed num_classes={num_classes}")
    if len(train) < 2:
        raise ValueError("need at least 2 training samples")
    es = train_cfg.early_stopping
    if es.metric == "accuracy" and model_cfg.head != "classification":
        raise ValueError(
            "training.early_stopping.metric='accuracy' needs model.head='classification'"
        )
    spec = LOSS_REGISTRY[loss_cfg.name]
    if es.metric == "zero_shot_accuracy" and not (
        spec.needs_text and model_cfg.num_views == 1
    ):
        raise ValueError(
            "training.early_stopping.metric='zero_shot_accuracy' needs loss.name='clip' and "
            "a single view (model.views)"
        )
    monitor = early_stopping_monitor(model_cfg, loss_cfg, es)
    needs_texts = monitor in ("val_loss", "zero_shot_accuracy") and spec.needs_text
    if validates and needs_texts and (val is None or val.texts is None):
        raise ValueError(
            f"early stopping on {monitor} with loss.name='clip' needs val texts"
        )
    return spec, monitor


def build_optimizer(
    model: nn.Module,
    loss_module: nn.Module,
    train_cfg: TrainingConfig,
    *,
    total_steps: int,
    warmup_steps: int,
    cuda: bool,
) -> tuple[list[str], list[nn.Parameter], torch.optim.AdamW, Any]:
    """AdamW over the model's and loss's parameter groups + the warm-up / cosine scheduler;
    returns (group names, trainable parameters, optimizer, scheduler)."""
    groups = param_groups(
        model,
        loss_module,
        lr_backbone=train_cfg.lr_backbone,
        lr_head=train_cfg.lr_head,
        weight_decay=train_cfg.weight_decay,
    )
    if not groups:
        raise ValueError("no trainable parameters (check model.clip.phase / trainable_layers)")
    group_names = [g["name"] for g in groups]
    trainable = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(
        groups,
        lr=train_cfg.lr_head,
        weight_decay=train_cfg.weight_decay,
        fused=True if cuda else None,  # fused CUDA kernel; default (for-each) on CPU
    )
    scheduler = build_scheduler(
        optimizer,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        min_lr_ratio=train_cfg.min_lr_ratio,
    )
    return group_names, trainable, optimizer, scheduler


def build_val_loader(
    val: ViewData | None, train_cfg: TrainingConfig, *, pin_memory: bool
) -> Any | None:
    """The validation loader (a fixed seeded order), ``None`` without validation samples."""
    if val is None or not len(val):
        return None
    eval_bs = train_cfg.eval_batch_size or train_cfg.batch_size
    order = np.random.default_rng(derive_seed(train_cfg.seed, 999_983)).permutation(
        len(val)
    )
    val_batches = [order[i : i + eval_bs] for i in range(0, len(val), eval_bs)]
    return make_loader(
        val,
        EpochBatchSampler(val_batches),
        num_workers=train_cfg.num_workers,
        pin_memory=pin_memory,
    )


def encode_texts(
    model: EmbeddingModel,
    model_cfg: ModelConfig,
    train: ViewData,
    val: ViewData | None,
    device: torch.device,
) -> tuple[TextTokenizer, Tokens, Tokens | None]:
    """CLIP image-text runs: the tokenizer (``model``'s EOS token set to its own) and the
    encoded prompts of ``train`` and ``val`` (``None`` without val texts) on ``device``."""
    if train.texts is None:
        raise ValueError("loss.name='clip' needs per-sample prompts in ViewData.texts")
    text_cfg = model.backbone.clip.config.text_config
    max_length = min(model_cfg.clip.max_length, int(text_cfg.max_position_embeddings))
    tokenizer = build_tokenizer(
        model_cfg.clip.tokenizer,
        weights=model_cfg.weights,
        corpus=train.texts,
        vocab_size=int(text_cfg.vocab_size),
        max_length=max_length,
    )
    model.backbone.set_eos_token_id(tokenizer.eos_token_id)
    ids, mask = tokenizer.encode(train.texts)
    train_tokens = (ids.to(device), mask.to(device))
    val_tokens = None
    if val is not None and val.texts is not None:
        ids, mask = tokenizer.encode(val.texts)
        val_tokens = (ids.to(device), mask.to(device))
    return tokenizer, train_tokens, val_tokens
