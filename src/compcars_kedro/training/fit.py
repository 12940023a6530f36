"""Training entry point: :func:`fit` trains one run in this process or, with
``training.ddp.world_size > 1``, over that many local DDP processes
(:mod:`~compcars_kedro.training.distributed`); both run
:func:`~compcars_kedro.training.loop.fit_rank`.

Training uses AdamW (backbone / head learning rates, no decay on norms / biases / 1-d /
positional parameters), linear warm-up + cosine LR stepped per optimizer step, bf16 autocast +
channels_last on CUDA (fp32 on CPU), optional ``torch.compile``, gradient clipping, per-epoch
validation (retrieval metrics, accuracy for classification heads, val loss), early stopping and
``last/`` + ``best/`` checkpoints in ``work_dir``.  Batch order and augmentation are seeded per
``(seed, epoch)``: a run interrupted after epoch k and resumed (``resume=True``) ends with
exactly the same weights / metrics as an uninterrupted run on CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import TrainingConfig
from .data import ViewData
from .distributed import fit_distributed
from .loop import FitResult, fit_rank
from .losses import LossConfig
from .models import ModelConfig


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
        return fit_distributed(model_cfg, loss_cfg, train_cfg, train, val, **kwargs)
    result = fit_rank(model_cfg, loss_cfg, train_cfg, train, val, **kwargs)
    assert result is not None
    return result

