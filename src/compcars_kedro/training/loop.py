"""The training loop of one process: :func:`fit_rank` (called by
:func:`~compcars_kedro.training.fit.fit`, and per rank by
:mod:`~compcars_kedro.training.distributed`) and its :class:`FitResult`.

Per epoch: train, validate (retrieval metrics, accuracy for classification heads, val loss),
step early stopping, write ``best/`` (if improved) and ``last/`` in ``work_dir``. The epoch's
state is a :class:`~compcars_kedro.training.state.TrainState` written into the checkpoint meta
and read back on resume: a run interrupted after epoch k and resumed (``resume=True``) ends
with exactly the same weights / metrics as an uninterrupted run on CPU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from .checkpoint import (
    Checkpoint,
    load_checkpoint,
    recover_interrupted_save,
    save_checkpoint,
)
from .config import TrainingConfig
from .data import ViewData
from .losses import LossConfig
from .metrics import HISTORY_COLUMNS
from .models import ModelConfig
from .state import EarlyStopping, TrainState
from .trainer import Trainer

if TYPE_CHECKING:
    from .dist_context import DistContext

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Outcome of :func:`~compcars_kedro.training.fit.fit`."""

    best: Checkpoint
    last: Checkpoint
    history: pd.DataFrame
    best_metrics: dict[str, float]
    model: nn.Module  # best weights loaded, eval mode
    #: the starting backbone before any training step, without head (see
    #: :meth:`Trainer.baseline_checkpoint`)
    baseline: Checkpoint | None = None
    monitor: str = ""  # the validation metric early stopping watched


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
    best_state = TrainState.from_dict(best.meta)
    best_row = hist.loc[hist["epoch"] == best_state.epoch]
    numeric = [k for k in HISTORY_COLUMNS if k not in ("epoch", "monitor")]
    best_metrics = (
        {k: float(best_row.iloc[0][k]) for k in numeric} | {"epoch": best_state.epoch}
        if len(best_row)
        else {}
    )
    monitor = best_state.monitor
    return FitResult(best, last, hist, best_metrics, model, baseline, monitor)


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
        state = _resume(state, trainer, work, base_meta)
    es = state.stopping

    for epoch in range(state.epoch, train_cfg.epochs):
        if es.stopped:
            break
        tr = trainer.train_epoch(epoch)
        if main:
            _end_epoch(trainer, state, epoch, tr, base_meta, work)
        if dist is not None:
            es.stopped = dist.broadcast_flag(es.stopped)
        if _should_stop(state, epoch + 1, stop_after_epoch, main=main):
            break

    if not main:
        return None
    if state.last is None or state.best is None:
        raise RuntimeError("fit() ran no epoch (training.epochs already reached?)")
    return fit_result(
        trainer.model, trainer.loss_module, state.best, state.last, state.history, baseline
    )


def _should_stop(
    state: TrainState, epochs_done: int, stop_after_epoch: int | None, *, main: bool
) -> bool:
    """Whether the loop ends after ``epochs_done`` epochs: early stopping decided so (logged by
    the main process) or ``stop_after_epoch`` is reached."""
    es = state.stopping
    if es.stopped:
        if main:
            logger.info(
                "Early stopping after epoch %d: no %s improvement for %d epochs "
                "(best %s at epoch %d)",
                epochs_done,
                es.metric,
                es.bad_epochs,
                es.best_value,
                state.best_epoch,
            )
        return True
    if stop_after_epoch is not None and epochs_done >= stop_after_epoch:
        logger.info("Stopping after epoch %d as requested (stop_after_epoch)", epochs_done)
        return True
    return False


def _resume(
    state: TrainState, trainer: Trainer, work: Path | None, base_meta: dict[str, Any]
) -> TrainState:
    """The state of ``work/last`` (+ ``work/best``), its weights and optimizer / scheduler
    loaded into ``trainer``; ``state`` itself if there is no ``work/last`` yet."""
    if work is None:
        raise ValueError("resume=True needs a work_dir")
    recover_interrupted_save(work / "last")
    if not (work / "last").is_dir():
        logger.warning("resume=True but %s does not exist: starting from scratch", work / "last")
        return state
    last = load_checkpoint(work / "last")
    trainer.load(last, with_optimizer=True)
    resumed = TrainState.from_dict(last.meta, state.stopping)
    resumed.last = last
    if (work / "best").is_dir():
        resumed.best = load_checkpoint(work / "best")
    _warn_config_changes(last.meta, base_meta)
    logger.info("Resuming from %s after epoch %d", work / "last", resumed.epoch)
    return resumed


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




def _end_epoch(
    trainer: Trainer,
    state: TrainState,
    epoch: int,
    tr: dict[str, float],
    base_meta: dict[str, Any],
    work: Path | None,
) -> None:
    """Validate, update the state, write ``best/`` (if improved) and ``last/``, log."""
    ev = trainer.evaluate()
    lr_b, lr_h = trainer.lr_by_kind()
    metric = state.monitor
    row = {
        "epoch": epoch + 1,
        "train_loss": tr["train_loss"],
        **ev,
        "lr_backbone": lr_b,
        "lr_head": lr_h,
        "train_img_per_s": tr["train_img_per_s"],
        "epoch_time_s": tr["epoch_time_s"],
        "monitor": metric,
    }
    no_val = trainer.val_loader is None
    improved = state.end_epoch(row, None if no_val else float(row[metric]))
    meta = {**base_meta, **state.to_dict()}
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
        f" *best {metric}*" if improved else "",
    )
