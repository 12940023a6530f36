"""The :class:`Trainer` of one training run: model, loss, optimizer, scheduler and loaders, one
training step / epoch, validation and checkpoint snapshots.

bf16 autocast + channels_last on CUDA (fp32 on CPU), optional ``torch.compile``, gradient
clipping; batch order and augmentation are seeded per ``(seed, epoch)``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from compcars_kedro.names import BASELINE

from .augment import prepare_images
from .checkpoint import Checkpoint, cpu_state
from .config import TrainingConfig
from .data import EpochBatchSampler, ViewData, make_loader, pk_batches, random_batches
from .inference import autocast, resolve_device
from .losses import LossConfig, build_loss, uses_pk_sampler
from .metrics import VAL_METRICS, retrieval_metrics
from .models import ModelConfig, build_model
from .seed import derive_seed, seed_everything
from .tokenizer import BPETokenizer
from .trainer_setup import build_optimizer, build_val_loader, check_run, encode_texts

if TYPE_CHECKING:
    from .dist_context import DistContext

logger = logging.getLogger(__name__)


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
        with autocast(t.device, t.amp):
            out = t.forward_fn(x)
            if t.train_tokens is not None:
                ids, mask = t.train_tokens
                out["text_embedding"] = self.model.encode_text(ids[index], mask[index])
        return self.loss_module(out, y)  # fp32, outside autocast (e.g. ArcFace cosines)


class Trainer:
    """Model, loss, optimizer, scheduler and loaders of one training run (used by
    :func:`~compcars_kedro.training.fit.fit` and the throughput benchmark)."""

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
        self.spec, self.monitor = check_run(
            model_cfg,
            loss_cfg,
            train_cfg,
            train,
            val,
            num_classes=num_classes,
            validates=dist is None or dist.rank == 0,  # under DDP only rank 0 validates
        )
        cuda = self.device.type == "cuda"
        self.amp = bool(train_cfg.amp and cuda)
        self.seed_generator = seed_everything(train_cfg.seed, train_cfg.deterministic)
        self._build_modules(cuda)  # model + loss, right after seeding

        self.tokenizer = None
        self.train_tokens: tuple[torch.Tensor, torch.Tensor] | None = None
        self.val_tokens: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.spec.needs_text:
            self.tokenizer, self.train_tokens, self.val_tokens = encode_texts(
                self.model, model_cfg, train, val, self.device
            )

        self.pk = uses_pk_sampler(loss_cfg, train_cfg)
        self.steps_per_epoch = len(self.epoch_batches(0))
        self.total_steps = self.steps_per_epoch * train_cfg.epochs
        self.warmup_steps = min(train_cfg.resolve_warmup_steps(self.total_steps), self.total_steps)
        self.group_names, self.trainable, self.optimizer, self.scheduler = build_optimizer(
            self.model,
            self.loss_module,
            train_cfg,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            cuda=cuda,
        )
        self.forward_fn: Any = torch.compile(self.model) if train_cfg.compile else self.model
        self.step_module: nn.Module = LossForward(self)
        if dist is not None:
            self.step_module = dist.wrap(self.step_module, self.device)

        self.train_sampler = EpochBatchSampler()
        self.train_loader = make_loader(
            train,
            self.train_sampler,
            num_workers=train_cfg.num_workers,
            pin_memory=cuda,
            generator=self.seed_generator,
        )
        self.val_loader = build_val_loader(val, train_cfg, pin_memory=cuda)
        self.last_lrs: dict[str, float] = {}
        self._log_setup()

    # ------------------------------------------------------------------ setup helpers

    def _build_modules(self, cuda: bool) -> None:
        """The model (SyncBatchNorm under DDP on CUDA, channels_last) and the loss module(s)."""
        model_cfg, loss_cfg, train_cfg, dist = self.model_cfg, self.loss_cfg, self.cfg, self.dist
        num_classes = self.num_classes
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

    def _log_setup(self) -> None:
        """The trainer's one-line summary (DEBUG for a trainer without val: the baseline's)."""
        model_cfg, train_cfg, dist = self.model_cfg, self.cfg, self.dist
        logger.log(
            logging.INFO if self.val_data is not None else logging.DEBUG,
            "Trainer: model=%s head=%s loss=%s views=%s | %d steps/epoch x %d epochs, warmup %d | "
            "device=%s amp=%s compile=%s | %d trainable params | early stopping on %s%s",
            model_cfg.name,
            model_cfg.head,
            self.loss_cfg.name,
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
            with autocast(self.device, self.amp):
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
        with autocast(self.device, self.amp):
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
            "stage": BASELINE,
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


def _all_tensors(d: dict[str, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())
