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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import prepare_images
from .checkpoint import Checkpoint, cpu_state, load_checkpoint, save_checkpoint
from .config import LossConfig, ModelConfig, TrainingConfig
from .data import (
    EpochBatchSampler,
    ViewData,
    make_loader,
    pk_batches,
    random_batches,
    sequential_batches,
)
from .losses import LOSS_REGISTRY, build_loss, uses_pk_sampler, validate_combination
from .models import EmbeddingModel, build_model, param_groups
from .schedule import build_scheduler
from .seed import derive_seed, seed_everything
from .tokenizer import BPETokenizer, build_tokenizer

logger = logging.getLogger(__name__)

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    *RETRIEVAL_METRICS,
    "accuracy",
    "lr_backbone",
    "lr_head",
    "train_img_per_s",
    "epoch_time_s",
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
    ) -> None:
        self.model_cfg, self.loss_cfg, self.cfg = model_cfg, loss_cfg, train_cfg
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
        if self.spec.needs_text and es.metric == "val_loss" and (val is None or val.texts is None):
            raise ValueError(
                "training.early_stopping.metric='val_loss' with loss.name='clip' needs val texts"
            )
        cuda = self.device.type == "cuda"
        self.amp = bool(train_cfg.amp and cuda)
        self.seed_generator = seed_everything(train_cfg.seed, train_cfg.deterministic)

        self.model = build_model(model_cfg, num_classes).to(self.device)
        if cuda and train_cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.model.channels_last = True
        self.loss_module = build_loss(
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
            "device=%s amp=%s compile=%s | %d trainable params",
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
            x, image_size=self.model_cfg.image_size, augment=self.cfg.augment, generator=generator
        )
        with _autocast(self.device, self.amp):
            out = self._outputs(x, batch, self.train_tokens)
        loss = self.loss_module(out, y)  # fp32, outside autocast (e.g. ArcFace cosines)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.last_lrs = {g["name"]: float(g["lr"]) for g in self.optimizer.param_groups}
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

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
        self.train_sampler.set_batches(self.epoch_batches(epoch))
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
        res = {"val_loss": nan, **{m: nan for m in RETRIEVAL_METRICS}, "accuracy": nan}
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
                loss_sum += float(self.loss_module(out, y)) * len(y)
                n_loss += len(y)
            emb[batch["index"].numpy()] = out["embedding"].float().cpu().numpy()
            if out["logits"] is not None:
                correct += int((out["logits"].argmax(-1) == y).sum())
        res["val_loss"] = loss_sum / n_loss if n_loss else nan
        res.update(retrieval_metrics(emb, self.val_data.labels, device=self.device))
        if self.model.head_type == "classification":
            res["accuracy"] = correct / len(self.val_data)
        return res

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


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    if value is None or math.isnan(value):
        return False
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _history_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    df = df.astype({c: "float64" for c in HISTORY_COLUMNS if c != "epoch"})
    return df.astype({"epoch": "int64"})


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
    total (simulated interruption).  Epochs in history / meta are 1-based.
    """
    trainer = Trainer(
        model_cfg,
        loss_cfg,
        train_cfg,
        train,
        num_classes=num_classes,
        device=device,
        val=val,
        progress=progress,
    )
    es = train_cfg.early_stopping
    mode = es.resolved_mode
    work = Path(work_dir) if work_dir is not None else None
    base_meta = trainer.base_meta(label_names)

    start_epoch, history = 0, []
    best_value: float | None = None
    best_epoch, bad_epochs, stopped = 0, 0, False
    best_ckpt: Checkpoint | None = None
    last_ckpt: Checkpoint | None = None
    if resume:
        if work is None:
            raise ValueError("resume=True needs a work_dir")
        if (work / "last").is_dir():
            last_ckpt = load_checkpoint(work / "last")
            trainer.load(last_ckpt, with_optimizer=True)
            m = last_ckpt.meta
            start_epoch = int(m["epoch"])
            history = [
                {k: (float("nan") if v is None else v) for k, v in row.items()}
                for row in m["history"]
            ]
            best_value, best_epoch = m.get("best_value"), int(m.get("best_epoch", 0))
            bad_epochs, stopped = int(m.get("bad_epochs", 0)), bool(m.get("stopped_early", False))
            if (work / "best").is_dir():
                best_ckpt = load_checkpoint(work / "best")
            _warn_config_changes(m, base_meta)
            logger.info("Resuming from %s after epoch %d", work / "last", start_epoch)
        else:
            logger.warning(
                "resume=True but %s does not exist: starting from scratch", work / "last"
            )

    for epoch in range(start_epoch, train_cfg.epochs):
        if stopped:
            break
        tr = trainer.train_epoch(epoch)
        ev = trainer.evaluate()
        lr_b, lr_h = trainer.lr_by_kind()
        row = {
            "epoch": epoch + 1,
            "train_loss": tr["train_loss"],
            **ev,
            "lr_backbone": lr_b,
            "lr_head": lr_h,
            "train_img_per_s": tr["train_img_per_s"],
            "epoch_time_s": tr["epoch_time_s"],
        }
        history.append(row)
        value = float(row[es.metric])
        no_val = trainer.val_loader is None
        if no_val or _improved(value, best_value, mode, es.min_delta):
            best_value, best_epoch, bad_epochs = (None if no_val else value), epoch + 1, 0
            improved = True
        else:
            bad_epochs += 1
            improved = False
        stopped = es.patience is not None and bad_epochs >= es.patience
        meta = {
            **base_meta,
            "epoch": epoch + 1,
            "history": history,
            "metrics": {
                k: row[k] for k in ("train_loss", "val_loss", *RETRIEVAL_METRICS, "accuracy")
            },
            "early_stopping_metric": es.metric,
            "best_value": best_value,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "stopped_early": stopped,
        }
        if improved:
            best_ckpt = trainer.checkpoint(dict(meta), with_optimizer=False)
            if work is not None:
                save_checkpoint(best_ckpt, work / "best")
        last_ckpt = trainer.checkpoint(meta, with_optimizer=True)
        if work is not None:
            save_checkpoint(last_ckpt, work / "last")
        logger.info(
            "epoch %d/%d: train_loss=%.4f val_loss=%.4f P@1=%.4f R-P=%.4f MAP@R=%.4f acc=%.4f "
            "lr=(%.2e, %.2e) %.0f img/s %.1fs%s",
            epoch + 1,
            train_cfg.epochs,
            row["train_loss"],
            row["val_loss"],
            row["precision_at_1"],
            row["r_precision"],
            row["mean_average_precision_at_r"],
            row["accuracy"],
            lr_b,
            lr_h,
            row["train_img_per_s"],
            row["epoch_time_s"],
            " *best*" if improved else "",
        )
        if stopped:
            logger.info(
                "Early stopping after epoch %d: no %s improvement for %d epochs (best %s at epoch %d)",
                epoch + 1,
                es.metric,
                bad_epochs,
                best_value,
                best_epoch,
            )
            break
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            logger.info("Stopping after epoch %d as requested (stop_after_epoch)", epoch + 1)
            break

    if last_ckpt is None or best_ckpt is None:
        raise RuntimeError("fit() ran no epoch (training.epochs already reached?)")
    trainer.model.load_state_dict(best_ckpt.model_state)
    trainer.loss_module.load_state_dict(best_ckpt.loss_state)
    trainer.model.eval()
    hist = _history_frame(history)
    best_row = hist.loc[hist["epoch"] == best_ckpt.meta["epoch"]]
    best_metrics = (
        {k: float(best_row.iloc[0][k]) for k in HISTORY_COLUMNS if k != "epoch"}
        | {"epoch": int(best_ckpt.meta["epoch"])}
        if len(best_row)
        else {}
    )
    return FitResult(
        best=best_ckpt, last=last_ckpt, history=hist, best_metrics=best_metrics, model=trainer.model
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
