"""Training loop, validation, embedding extraction and retrieval metrics.

* :func:`fit` trains with AdamW (backbone / head learning rates, no decay on norms / biases /
  1-d / positional parameters), linear warm-up + cosine LR stepped per optimizer step, bf16
  autocast + channels_last on CUDA (fp32 on CPU), optional ``torch.compile``, gradient clipping,
  per-epoch validation (retrieval metrics, accuracy for classification heads, val loss), early
  stopping and ``last/`` + ``best/`` checkpoints in ``work_dir``.  Batch order and augmentation
  are seeded per ``(seed, epoch)``: a run interrupted after epoch k and resumed
  (``resume=True``) ends with exactly the same weights / metrics as an uninterrupted run on CPU.
* :func:`extract_embeddings` returns L2-normalised float32 embeddings (``model.embed``).
* :func:`retrieval_metrics` wraps pml's ``AccuracyCalculator`` (query == reference, self-matches
  excluded, ``k="max_bin_count"``, cosine similarity, no faiss).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import prepare_images
from .checkpoint import Checkpoint, cpu_state, load_checkpoint, save_checkpoint
from .config import EarlyStoppingConfig, TrainingConfig
from .data import (
    EpochBatchSampler,
    ViewData,
    make_loader,
    pk_batches,
    random_batches,
    sequential_batches,
)
from .losses import LOSS_REGISTRY, LossConfig, build_loss, uses_pk_sampler, validate_combination
from .models import EmbeddingModel, ModelConfig, build_model, param_groups
from .schedule import build_scheduler
from .seed import derive_seed, seed_everything
from .tokenizer import BPETokenizer, build_tokenizer

if TYPE_CHECKING:
    from .distributed import DistContext

logger = logging.getLogger(__name__)

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
#: validation metrics of one epoch (``zero_shot_accuracy``: CLIP image-text runs, single view)
VAL_METRICS = ("val_loss", *RETRIEVAL_METRICS, "accuracy", "zero_shot_accuracy")
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    *VAL_METRICS,
    "lr_backbone",
    "lr_head",
    "train_img_per_s",
    "epoch_time_s",
    "monitor",  # the early-stopping metric of the run (a string column)
]


# --------------------------------------------------------------------------- metrics


def _tensor(values: np.ndarray | torch.Tensor, dtype: type) -> torch.Tensor:
    """A tensor of ``values``; read-only arrays (memmaps, pandas/arrow buffers) are copied, since
    torch cannot share memory it may not write (it warns instead)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy() if values.is_floating_point() else values.cpu().numpy()
    array = np.asarray(values, dtype=dtype)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device | None = None,
    knn_batch_size: int = 4096,
) -> dict[str, float]:
    """precision@1, R-precision and MAP@R (pml ``AccuracyCalculator``), query == reference.

    Self-matches are excluded (``ref_includes_query=True``); classes with a single sample are
    ignored as queries by pml.  Cosine similarity, exact kNN in chunks of ``knn_batch_size``.
    """
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    emb = _tensor(embeddings, np.float32)
    lab = _tensor(labels, np.int64)
    if len(emb) < 2 or len(np.unique(lab.numpy())) == len(lab):
        return {m: float("nan") for m in RETRIEVAL_METRICS}
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    calc = AccuracyCalculator(
        include=RETRIEVAL_METRICS,
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity(), batch_size=knn_batch_size),
        device=torch.device(device),
    )
    res = calc.get_accuracy(emb, lab, emb, lab, ref_includes_query=True)
    return {m: float(res[m]) for m in RETRIEVAL_METRICS}


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` with an explicit CUDA index (generators must match tensors' device)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_embeddings(
    model: EmbeddingModel,
    data: ViewData,
    *,
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
    amp: bool = True,
    progress: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``model.embed`` of every sample of ``data`` in order: float32 ``(M, D)``, L2-normalised.

    The model is moved to ``device`` and set to eval mode; bf16 autocast (+ channels_last) on
    CUDA, no augmentation; images are resized on the device to ``model.image_size`` if needed.
    ``out``: an ``(M, D)`` float32 array to fill and return instead of a new one, e.g. a
    ``numpy.lib.format.open_memmap`` of the output file, so the embeddings are streamed to
    disk batch by batch rather than held in memory.
    """
    device = resolve_device(device)
    model.to(device).eval()
    if device.type == "cuda" and not model.channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    shape = (len(data), model.embedding_dim)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif tuple(out.shape) != shape or out.dtype != np.float32:
        raise ValueError(f"out is {out.dtype} {tuple(out.shape)}; expected float32 {shape}")
    sampler = EpochBatchSampler(sequential_batches(len(data), batch_size))
    loader = make_loader(data, sampler, num_workers=num_workers, pin_memory=device.type == "cuda")
    t0 = time.perf_counter()
    for batch in tqdm(loader, desc="embed", disable=not progress, leave=False):
        x = prepare_images(
            batch["images"].to(device, non_blocking=True), image_size=model.image_size
        )
        with _autocast(device, amp):
            emb = model.embed(x)
        idx = batch["index"].numpy()
        out[idx] = F.normalize(emb.float(), dim=-1).cpu().numpy()
    dt = time.perf_counter() - t0
    n_img = len(data) * data.num_views
    logger.info(
        "Extracted %d embeddings (dim %d) in %.1fs: %.0f img/s",
        len(data),
        out.shape[1],
        dt,
        n_img / max(dt, 1e-9),
    )
    return out


# --------------------------------------------------------------------------- trainer


class LossForward(nn.Module):
    """Model forward (autocast) + loss (fp32) of a training batch as ONE module.

    DistributedDataParallel wraps this module, so it synchronises the loss module's parameters
    (ArcFace class weights) together with the model's.
    """

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model
        self.loss_module = trainer.loss_module
        self.__dict__["_trainer"] = trainer  # not a submodule (no duplicate parameters)

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        t = self._trainer
        with _autocast(t.device, t.amp):
            out = t.forward_fn(x)
            if t.train_tokens is not None:
                ids, mask = t.train_tokens
                out["text_embedding"] = self.model.encode_text(ids[index], mask[index])
        return self.loss_module(out, y)  # fp32, outside autocast (e.g. ArcFace cosines)



class Trainer:
    """Model, loss, optimizer, scheduler and loaders of one training run (used by :func:`fit`
    and the throughput benchmark)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig,
        train_cfg: TrainingConfig,
        train: ViewData,
        *,
        num_classes: int,
        device: str | torch.device,
        val: ViewData | None = None,
        progress: bool = True,
        dist: DistContext | None = None,
    ) -> None:
        self.model_cfg, self.loss_cfg, self.cfg = model_cfg, loss_cfg, train_cfg
        self.dist = dist
        self.shard = None if dist is None else (dist.rank, dist.world_size)
        self.device = resolve_device(device)
        self.train_data, self.val_data = train, val
        self.num_classes = int(num_classes)
        self.progress = progress
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
        self.spec = LOSS_REGISTRY[loss_cfg.name]
        if es.metric == "zero_shot_accuracy" and not (
            self.spec.needs_text and model_cfg.num_views == 1
        ):
            raise ValueError(
                "training.early_stopping.metric='zero_shot_accuracy' needs loss.name='clip' and "
                "a single view (model.views)"
            )
        self.monitor = early_stopping_monitor(model_cfg, loss_cfg, es)
        validates = dist is None or dist.rank == 0  # under DDP only rank 0 validates
        needs_texts = self.monitor in ("val_loss", "zero_shot_accuracy") and self.spec.needs_text
        if validates and needs_texts and (val is None or val.texts is None):
            raise ValueError(
                f"early stopping on {self.monitor} with loss.name='clip' needs val texts"
            )
        cuda = self.device.type == "cuda"
        self.amp = bool(train_cfg.amp and cuda)
        self.seed_generator = seed_everything(train_cfg.seed, train_cfg.deterministic)

        self.model = build_model(model_cfg, num_classes).to(self.device)
        if dist is not None and cuda and train_cfg.ddp.sync_batchnorm:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if cuda and train_cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.model.channels_last = True
        self.loss_module = build_loss(
            loss_cfg,
            num_classes=num_classes,
            embedding_size=self.model.embedding_dim,
            world_size=1 if dist is None else dist.world_size,
        ).to(self.device)
        #: reported loss = backward loss x this (pml's distributed wrapper multiplies by N)
        self.loss_log_scale = float(getattr(self.loss_module, "log_scale", 1.0))
        #: validation (rank 0 alone) needs the local loss; gathering losses hold no parameters
        self.eval_loss = self.loss_module
        if dist is not None and self.spec.cross_batch:
            self.eval_loss = build_loss(
                loss_cfg, num_classes=num_classes, embedding_size=self.model.embedding_dim
            ).to(self.device)

        self.tokenizer = None
        self.train_tokens: tuple[torch.Tensor, torch.Tensor] | None = None
        self.val_tokens: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.spec.needs_text:
            self._setup_text()

        self.pk = uses_pk_sampler(loss_cfg, train_cfg)
        self.steps_per_epoch = len(self.epoch_batches(0))
        self.total_steps = self.steps_per_epoch * train_cfg.epochs
        self.warmup_steps = min(train_cfg.resolve_warmup_steps(self.total_steps), self.total_steps)
        groups = param_groups(
            self.model,
            self.loss_module,
            lr_backbone=train_cfg.lr_backbone,
            lr_head=train_cfg.lr_head,
            weight_decay=train_cfg.weight_decay,
        )
        if not groups:
            raise ValueError("no trainable parameters (check model.clip.phase / trainable_layers)")
        self.group_names = [g["name"] for g in groups]
        self.trainable = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=train_cfg.lr_head,
            weight_decay=train_cfg.weight_decay,
            fused=True if cuda else None,  # fused CUDA kernel; default (for-each) on CPU
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            min_lr_ratio=train_cfg.min_lr_ratio,
        )
        self.forward_fn: Any = torch.compile(self.model) if train_cfg.compile else self.model
        self.step_module: nn.Module = LossForward(self)
        if dist is not None:
            self.step_module = dist.wrap(self.step_module, self.device)

        pin = cuda
        self.train_sampler = EpochBatchSampler()
        self.train_loader = make_loader(
            train,
            self.train_sampler,
            num_workers=train_cfg.num_workers,
            pin_memory=pin,
            generator=self.seed_generator,
        )
        self.val_loader = None
        if val is not None and len(val):
            eval_bs = train_cfg.eval_batch_size or train_cfg.batch_size
            order = np.random.default_rng(derive_seed(train_cfg.seed, 999_983)).permutation(
                len(val)
            )
            val_batches = [order[i : i + eval_bs] for i in range(0, len(val), eval_bs)]
            self.val_loader = make_loader(
                val,
                EpochBatchSampler(val_batches),
                num_workers=train_cfg.num_workers,
                pin_memory=pin,
            )
        self.last_lrs: dict[str, float] = {}
        # the baseline checkpoint's trainer (no validation) would repeat the training's line
        logger.log(
            logging.INFO if val is not None else logging.DEBUG,
            "Trainer: model=%s head=%s loss=%s views=%s | %d steps/epoch x %d epochs, warmup %d | "
            "device=%s amp=%s compile=%s | %d trainable params | early stopping on %s%s",
            model_cfg.name,
            model_cfg.head,
            loss_cfg.name,
            model_cfg.views,
            self.steps_per_epoch,
            train_cfg.epochs,
            self.warmup_steps,
            self.device,
            self.amp,
            train_cfg.compile,
            sum(p.numel() for p in self.trainable),
            self.monitor,
            "" if dist is None else f" | DDP rank {dist.rank}/{dist.world_size} ({dist.backend})",
        )

    # ------------------------------------------------------------------ setup helpers

    def _setup_text(self) -> None:
        if self.train_data.texts is None:
            raise ValueError("loss.name='clip' needs per-sample prompts in ViewData.texts")
        text_cfg = self.model.backbone.clip.config.text_config
        max_length = min(self.model_cfg.clip.max_length, int(text_cfg.max_position_embeddings))
        self.tokenizer = build_tokenizer(
            self.model_cfg.clip.tokenizer,
            weights=self.model_cfg.weights,
            corpus=self.train_data.texts,
            vocab_size=int(text_cfg.vocab_size),
            max_length=max_length,
        )
        self.model.backbone.set_eos_token_id(self.tokenizer.eos_token_id)
        ids, mask = self.tokenizer.encode(self.train_data.texts)
        self.train_tokens = (ids.to(self.device), mask.to(self.device))
        if self.val_data is not None and self.val_data.texts is not None:
            ids, mask = self.tokenizer.encode(self.val_data.texts)
            self.val_tokens = (ids.to(self.device), mask.to(self.device))

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Index batches of ``epoch`` (deterministic in ``(seed, epoch)``)."""
        cfg = self.cfg
        if self.pk:
            return pk_batches(
                self.train_data.labels, cfg.batch_size, cfg.sampler.m_per_class, cfg.seed, epoch
            )
        return random_batches(len(self.train_data), cfg.batch_size, cfg.seed, epoch)

    # ------------------------------------------------------------------ steps

    def _outputs(
        self,
        x: torch.Tensor,
        batch: dict[str, torch.Tensor],
        tokens: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> dict[str, Any]:
        out = self.forward_fn(x)
        if tokens is not None:
            idx = batch["index"].to(self.device, non_blocking=True)
            out["text_embedding"] = self.model.encode_text(tokens[0][idx], tokens[1][idx])
        return out

    def train_step(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> torch.Tensor:
        """One optimizer + scheduler step on a loader batch; returns the detached loss."""
        x = batch["images"].to(self.device, non_blocking=True)
        y = batch["labels"].to(self.device, non_blocking=True)
        x = prepare_images(
            x,
            image_size=self.model_cfg.image_size,
            augment=self.cfg.augment,
            generator=generator,
            shard=self.shard,
        )
        loss = self.step_module(x, y, batch["index"].to(self.device, non_blocking=True))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.last_lrs = {g["name"]: float(g["lr"]) for g in self.optimizer.param_groups}
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach() * self.loss_log_scale

    def train_epoch(
        self,
        epoch: int,
        *,
        max_steps: int | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        """Train one epoch (0-based ``epoch``); returns train_loss, img/s, time, steps.

        ``on_step(steps_done)`` is called after every step (used by the benchmark).
        """
        torch.manual_seed(derive_seed(self.cfg.seed, epoch, 0))
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.cfg.seed, epoch, 3))
        batches = self.epoch_batches(epoch)
        if self.dist is not None:  # this rank's contiguous share of every global batch
            batches = [self.dist.shard(b) for b in batches]
        self.train_sampler.set_batches(batches)
        self.model.train()
        self.loss_module.train()
        loss_sum = torch.zeros((), device=self.device)
        steps = images = 0
        total = (
            len(self.train_sampler)
            if max_steps is None
            else min(max_steps, len(self.train_sampler))
        )
        t0 = time.perf_counter()
        bar = tqdm(
            self.train_loader,
            total=total,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for batch in bar:
            loss_sum += self.train_step(batch, gen)
            steps += 1
            images += batch["images"].shape[0] * batch["images"].shape[1]
            if on_step is not None:
                on_step(steps)
            if self.progress and steps % 25 == 0:
                bar.set_postfix(loss=f"{(loss_sum / steps).item():.4f}")
            if max_steps is not None and steps >= max_steps:
                break
        bar.close()
        if self.dist is not None:  # mean over ranks = the loss of the global batches
            loss_sum = self.dist.mean(loss_sum)
            images *= self.dist.world_size
        train_loss = (loss_sum / max(steps, 1)).item()  # synchronises
        dt = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"non-finite training loss in epoch {epoch + 1}")
        return {
            "train_loss": train_loss,
            "train_img_per_s": images / max(dt, 1e-9),
            "epoch_time_s": dt,
            "steps": steps,
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation: val_loss, retrieval metrics on the embeddings, accuracy (classification)."""
        nan = float("nan")
        res = {m: nan for m in VAL_METRICS}
        if self.val_loader is None or self.val_data is None:
            return res
        self.model.eval()
        self.loss_module.eval()
        emb = np.empty((len(self.val_data), self.model.embedding_dim), dtype=np.float32)
        loss_sum, n_loss, correct = 0.0, 0, 0
        can_loss = not self.spec.needs_text or self.val_tokens is not None
        for batch in self.val_loader:
            x = prepare_images(
                batch["images"].to(self.device, non_blocking=True),
                image_size=self.model_cfg.image_size,
            )
            y = batch["labels"].to(self.device, non_blocking=True)
            with _autocast(self.device, self.amp):
                out = self._outputs(x, batch, self.val_tokens if can_loss else None)
            if can_loss and len(y) > 1:
                loss_sum += float(self.eval_loss(out, y)) * len(y)
                n_loss += len(y)
            emb[batch["index"].numpy()] = out["embedding"].float().cpu().numpy()
            if out["logits"] is not None:
                correct += int((out["logits"].argmax(-1) == y).sum())
        res["val_loss"] = loss_sum / n_loss if n_loss else nan
        res.update(retrieval_metrics(emb, self.val_data.labels, device=self.device))
        if self.model.head_type == "classification":
            res["accuracy"] = correct / len(self.val_data)
        res["zero_shot_accuracy"] = self._zero_shot_accuracy(emb)
        return res

    @torch.no_grad()
    def _zero_shot_accuracy(self, emb: np.ndarray) -> float:
        """CLIP image-text runs (one view): share of val images whose nearest class prompt
        (one prompt per val class, encoded by the text tower) is their own class."""
        if self.val_tokens is None or self.val_data is None or self.model_cfg.num_views != 1:
            return float("nan")
        labels = self.val_data.labels
        classes, first = np.unique(labels, return_index=True)
        idx = torch.as_tensor(first, device=self.device)
        with _autocast(self.device, self.amp):
            text = self.model.encode_text(self.val_tokens[0][idx], self.val_tokens[1][idx])
        text = text.float().cpu().numpy()
        pred = classes[np.argmax(emb @ text.T, axis=1)]
        return float((pred == labels).mean())

    # ------------------------------------------------------------------ state

    def lr_by_kind(self) -> tuple[float, float]:
        """(backbone lr, head lr) of the last optimizer step (NaN if the group is absent)."""
        lrs = self.last_lrs or {g["name"]: float(g["lr"]) for g in self.optimizer.param_groups}
        back = [v for k, v in lrs.items() if k.startswith("backbone")]
        head = [v for k, v in lrs.items() if k.startswith("head")]
        return (back[0] if back else float("nan"), head[0] if head else float("nan"))

    def checkpoint(self, meta: dict[str, Any], *, with_optimizer: bool) -> Checkpoint:
        """Snapshot (CPU copies) of the current weights (+ optimizer / scheduler state)."""
        opt = sched = None
        if with_optimizer:
            opt = self.optimizer.state_dict()
            opt = {
                "state": {
                    k: cpu_state(v) if _all_tensors(v) else dict(v) for k, v in opt["state"].items()
                },
                "param_groups": opt["param_groups"],
            }
            sched = self.scheduler.state_dict()
        return Checkpoint(
            model_state=cpu_state(self.model.state_dict()),
            loss_state=cpu_state(self.loss_module.state_dict()),
            meta=meta,
            optimizer_state=opt,
            scheduler_state=sched,
        )

    def baseline_checkpoint(self, meta: dict[str, Any]) -> Checkpoint:
        """The starting backbone (its current weights) without projection / classifier.

        Call it before the first training step. Rebuilt with :func:`model_from_checkpoint`, it
        embeds with the fused (concatenated) backbone features: identical for every loss that
        starts from the same backbone, views, weights and seed.
        """
        features = self.model.backbone_only()
        model_cfg = self.model_cfg.model_copy(update={"head": "metric", "embedding_dim": None})
        meta = {
            **meta,
            "model_config": model_cfg.model_dump(mode="json"),
            "embedding_dim": features.embedding_dim,
            "stage": "baseline",
            "embedding": "backbone features fused by concatenation, before any head",
            "trained_head": self.model_cfg.head,
        }
        return Checkpoint(model_state=cpu_state(features.state_dict()), meta=meta)

    def load(self, ckpt: Checkpoint, *, with_optimizer: bool) -> None:
        """Restore weights (and optimizer / scheduler state) from ``ckpt``."""
        self.model.load_state_dict(ckpt.model_state)
        self.loss_module.load_state_dict(ckpt.loss_state)
        if with_optimizer:
            if ckpt.optimizer_state is None or ckpt.scheduler_state is None:
                raise ValueError("checkpoint has no optimizer / scheduler state to resume from")
            self.optimizer.load_state_dict(ckpt.optimizer_state)
            self.scheduler.load_state_dict(ckpt.scheduler_state)

    def base_meta(self, label_names: list[str] | None) -> dict[str, Any]:
        """Configs and model facts stored in every checkpoint."""
        import torchvision

        meta: dict[str, Any] = {
            "model_config": self.model_cfg.model_dump(mode="json"),
            "loss_config": self.loss_cfg.model_dump(mode="json"),
            "training_config": self.cfg.model_dump(mode="json"),
            "num_classes": self.num_classes,
            "label_names": list(label_names) if label_names is not None else None,
            "embedding_dim": self.model.embedding_dim,
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        }
        if self.model.is_clip:
            meta["clip_config"] = self.model.backbone.clip.config.to_dict()
        if isinstance(self.tokenizer, BPETokenizer):
            meta["tokenizer_json"] = self.tokenizer.to_str()
        return meta


def _warn_config_changes(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Log configuration differences between a resumed checkpoint and the current call."""
    ignore = {"num_workers", "compile"}
    for key in ("model_config", "loss_config", "training_config", "num_classes"):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            diff = sorted(
                k for k in old.keys() | new.keys() if k not in ignore and old.get(k) != new.get(k)
            )
        else:
            diff = [] if old == new else [key]
        if diff:
            logger.warning(
                "Resuming with a different %s: %s changed since the checkpoint", key, diff
            )


def _all_tensors(d: dict[str, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())


# --------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    """Outcome of :func:`fit`."""

    best: Checkpoint
    last: Checkpoint
    history: pd.DataFrame
    best_metrics: dict[str, float]
    model: nn.Module  # best weights loaded, eval mode
    #: the starting backbone before any training step, without head (see
    #: :meth:`Trainer.baseline_checkpoint`)
    baseline: Checkpoint | None = None
    monitor: str = ""  # the validation metric early stopping watched


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    if value is None or math.isnan(value):
        return False
    return value > best + min_delta if mode == "max" else value < best - min_delta


def early_stopping_monitor(
    model_cfg: ModelConfig, loss_cfg: LossConfig, es: EarlyStoppingConfig
) -> str:
    """The validation metric early stopping watches.

    CLIP with ``phase: text`` trains only the text tower: the image embedding, and with it every
    image retrieval metric, cannot move, so such a metric is replaced by ``val_loss`` (the
    image-text loss on val; ``zero_shot_accuracy`` may be chosen explicitly).
    """
    metric = es.metric
    if model_cfg.name == "clip" and model_cfg.clip.phase == "text" and metric not in (
        "val_loss",
        "zero_shot_accuracy",
    ):
        logger.warning(
            "model.clip.phase='text' cannot move the image embedding: early stopping watches "
            "val_loss instead of training.early_stopping.metric=%r",
            metric,
        )
        return "val_loss"
    return metric


@dataclass
class EarlyStopping:
    """Early-stopping state on one monitored metric (``patience=None``: never stops)."""

    metric: str
    mode: str
    patience: int | None
    min_delta: float
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False

    @classmethod
    def from_config(cls, es: EarlyStoppingConfig, metric: str) -> EarlyStopping:
        mode = es.resolved_mode if metric == es.metric else ("min" if metric == "val_loss" else "max")
        return cls(metric, mode, es.patience, es.min_delta)

    def update(self, epoch: int, value: float | None) -> bool:
        """Record ``epoch``'s value (``None`` without validation: every epoch is the best);
        returns whether it improved."""
        improved = value is None or _improved(value, self.best_value, self.mode, self.min_delta)
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped = self.patience is not None and self.bad_epochs >= self.patience
        return improved

    def state(self) -> dict[str, Any]:
        """Checkpoint meta entries."""
        return {
            "early_stopping_metric": self.metric,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped,
        }

    def restore(self, meta: dict[str, Any]) -> None:
        """Inverse of :meth:`state` (resume)."""
        self.best_value, self.best_epoch = meta.get("best_value"), int(meta.get("best_epoch", 0))
        self.bad_epochs = int(meta.get("bad_epochs", 0))
        self.stopped = bool(meta.get("stopped_early", False))


@dataclass
class TrainState:
    """What :func:`fit` carries from epoch to epoch (and restores on resume)."""

    stopping: EarlyStopping
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: Checkpoint | None = None
    last: Checkpoint | None = None

    def resume_from(self, work: Path, trainer: Trainer, base_meta: dict[str, Any]) -> None:
        """Load ``work/last`` (+ ``work/best``) into the trainer and this state."""
        self.last = load_checkpoint(work / "last")
        trainer.load(self.last, with_optimizer=True)
        m = self.last.meta
        self.epochs_done = int(m["epoch"])
        self.history = [
            {k: (float("nan") if v is None else v) for k, v in row.items()} for row in m["history"]
        ]
        self.stopping.restore(m)
        if (work / "best").is_dir():
            self.best = load_checkpoint(work / "best")
        _warn_config_changes(m, base_meta)
        logger.info("Resuming from %s after epoch %d", work / "last", self.epochs_done)


def _history_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    df = df.astype({c: "float64" for c in HISTORY_COLUMNS if c not in ("epoch", "monitor")})
    return df.astype({"epoch": "int64", "monitor": "string"})


def fit_result(
    model: nn.Module,
    loss_module: nn.Module | None,
    best: Checkpoint,
    last: Checkpoint,
    history: list[dict[str, Any]],
    baseline: Checkpoint | None,
) -> FitResult:
    """:class:`FitResult` with the best weights loaded into ``model`` (eval mode)."""
    model.load_state_dict(best.model_state)
    if loss_module is not None:
        loss_module.load_state_dict(best.loss_state)
    model.eval()
    hist = _history_frame(history)
    best_row = hist.loc[hist["epoch"] == best.meta["epoch"]]
    numeric = [k for k in HISTORY_COLUMNS if k not in ("epoch", "monitor")]
    best_metrics = (
        {k: float(best_row.iloc[0][k]) for k in numeric} | {"epoch": int(best.meta["epoch"])}
        if len(best_row)
        else {}
    )
    monitor = str(best.meta.get("early_stopping_metric", ""))
    return FitResult(best, last, hist, best_metrics, model, baseline, monitor)


def fit(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainingConfig,
    train: ViewData,
    val: ViewData | None,
    *,
    num_classes: int,
    device: str | torch.device,
    work_dir: Path | str | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    label_names: list[str] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train, validate each epoch, early-stop, checkpoint; return the best model.

    ``work_dir``: ``last/`` is written every epoch (weights + optimizer + scheduler), ``best/``
    when the early-stopping metric improved (weights only).  ``resume=True`` continues from
    ``work_dir/last`` (starts fresh if absent).  ``stop_after_epoch=k`` returns after k epochs in
    total (simulated interruption).  Epochs in history / meta are 1-based.  The result's
    ``baseline`` is the model's backbone before the first training step (also on resume: the
    seeded initial state is rebuilt before ``last`` is loaded).

    ``train_cfg.ddp.world_size > 1`` trains with DistributedDataParallel over that many local
    processes started here (see :mod:`~compcars_kedro.training.distributed`).
    """
    kwargs = dict(
        num_classes=num_classes,
        device=device,
        work_dir=work_dir,
        resume=resume,
        stop_after_epoch=stop_after_epoch,
        label_names=label_names,
        progress=progress,
    )
    if train_cfg.ddp.world_size > 1:
        from .distributed import fit_distributed

        return fit_distributed(model_cfg, loss_cfg, train_cfg, train, val, **kwargs)
    result = fit_rank(model_cfg, loss_cfg, train_cfg, train, val, **kwargs)
    assert result is not None
    return result


def fit_rank(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainingConfig,
    train: ViewData,
    val: ViewData | None,
    *,
    num_classes: int,
    device: str | torch.device,
    work_dir: Path | str | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    label_names: list[str] | None = None,
    progress: bool = True,
    dist: DistContext | None = None,
) -> FitResult | None:
    """The training loop of one process (``dist=None``: the only one).

    Under DDP (``dist`` given) every rank trains its shard of each batch; rank 0 alone
    validates, decides early stopping (broadcast to the others), checkpoints and logs, and
    returns the result (the other ranks return ``None``).
    """
    main = dist is None or dist.rank == 0
    trainer = Trainer(
        model_cfg,
        loss_cfg,
        train_cfg,
        train,
        num_classes=num_classes,
        device=device,
        val=val if main else None,
        progress=progress and main,
        dist=dist,
    )
    work = Path(work_dir) if work_dir is not None else None
    base_meta = trainer.base_meta(label_names)
    baseline = trainer.baseline_checkpoint(base_meta) if main else None  # before any step
    state = TrainState(EarlyStopping.from_config(train_cfg.early_stopping, trainer.monitor))
    if resume:
        if work is None:
            raise ValueError("resume=True needs a work_dir")
        if (work / "last").is_dir():
            state.resume_from(work, trainer, base_meta)
        else:
            logger.warning(
                "resume=True but %s does not exist: starting from scratch", work / "last"
            )
    es = state.stopping

    for epoch in range(state.epochs_done, train_cfg.epochs):
        if es.stopped:
            break
        tr = trainer.train_epoch(epoch)
        if main:
            _end_epoch(trainer, state, epoch, tr, base_meta, work)
        if dist is not None:
            es.stopped = dist.broadcast_flag(es.stopped)
        if es.stopped:
            if main:
                logger.info(
                    "Early stopping after epoch %d: no %s improvement for %d epochs "
                    "(best %s at epoch %d)",
                    epoch + 1,
                    es.metric,
                    es.bad_epochs,
                    es.best_value,
                    es.best_epoch,
                )
            break
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            logger.info("Stopping after epoch %d as requested (stop_after_epoch)", epoch + 1)
            break

    if not main:
        return None
    if state.last is None or state.best is None:
        raise RuntimeError("fit() ran no epoch (training.epochs already reached?)")
    return fit_result(
        trainer.model, trainer.loss_module, state.best, state.last, state.history, baseline
    )


def _end_epoch(
    trainer: Trainer,
    state: TrainState,
    epoch: int,
    tr: dict[str, float],
    base_meta: dict[str, Any],
    work: Path | None,
) -> None:
    """Validate, update early stopping, write ``best/`` (if improved) and ``last/``, log."""
    ev = trainer.evaluate()
    lr_b, lr_h = trainer.lr_by_kind()
    es = state.stopping
    row = {
        "epoch": epoch + 1,
        "train_loss": tr["train_loss"],
        **ev,
        "lr_backbone": lr_b,
        "lr_head": lr_h,
        "train_img_per_s": tr["train_img_per_s"],
        "epoch_time_s": tr["epoch_time_s"],
        "monitor": es.metric,
    }
    state.history.append(row)
    state.epochs_done = epoch + 1
    no_val = trainer.val_loader is None
    improved = es.update(epoch + 1, None if no_val else float(row[es.metric]))
    meta = {
        **base_meta,
        "epoch": epoch + 1,
        "history": state.history,
        "metrics": {k: row[k] for k in ("train_loss", *VAL_METRICS)},
        **es.state(),
    }
    if improved:
        state.best = trainer.checkpoint(dict(meta), with_optimizer=False)
        if work is not None:
            save_checkpoint(state.best, work / "best")
    state.last = trainer.checkpoint(meta, with_optimizer=True)
    if work is not None:
        save_checkpoint(state.last, work / "last")
    zs = row["zero_shot_accuracy"]
    logger.info(
        "epoch %d/%d: train_loss=%.4f val_loss=%.4f P@1=%.4f R-P=%.4f MAP@R=%.4f acc=%.4f%s "
        "lr=(%.2e, %.2e) %.0f img/s %.1fs%s",
        epoch + 1,
        trainer.cfg.epochs,
        row["train_loss"],
        row["val_loss"],
        row["precision_at_1"],
        row["r_precision"],
        row["mean_average_precision_at_r"],
        row["accuracy"],
        "" if math.isnan(zs) else f" zero-shot={zs:.4f}",
        lr_b,
        lr_h,
        row["train_img_per_s"],
        row["epoch_time_s"],
        f" *best {es.metric}*" if improved else "",
    )


def model_from_checkpoint(
    ckpt: Checkpoint | str | Path, device: str | torch.device = "cpu"
) -> EmbeddingModel:
    """Rebuild the model of a checkpoint (no pretrained files needed) in eval mode."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    meta = ckpt.meta
    model_cfg = ModelConfig.model_validate(meta["model_config"])
    model = build_model(
        model_cfg, int(meta["num_classes"]), load_weights=False, clip_config=meta.get("clip_config")
    )
    model.load_state_dict(ckpt.model_state)
    return model.to(torch.device(device)).eval()
