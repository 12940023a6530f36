"""Training state and early stopping: what :func:`~compcars_kedro.training.fit.fit` carries from
epoch to epoch and writes into (and reads back from) a checkpoint's meta.

The checkpoint keys of the state are listed once, in :meth:`TrainState.to_dict` /
:meth:`TrainState.from_dict` (``epoch``, ``history``, ``metrics``, ``early_stopping_metric``,
``best_value``, ``best_epoch``, ``bad_epochs``, ``stopped_early``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .config import EarlyStoppingConfig
from .losses import LossConfig
from .metrics import VAL_METRICS
from .models import ModelConfig

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

logger = logging.getLogger(__name__)


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
    """Early stopping on one monitored metric (``patience=None``: never stops): the rule
    (``mode``, ``patience``, ``min_delta``) and its counters."""

    metric: str
    mode: str
    patience: int | None
    min_delta: float
    best_value: float | None = None
    bad_epochs: int = 0
    stopped: bool = False

    @classmethod
    def from_config(cls, es: EarlyStoppingConfig, metric: str) -> EarlyStopping:
        mode = es.resolved_mode if metric == es.metric else ("min" if metric == "val_loss" else "max")
        return cls(metric, mode, es.patience, es.min_delta)

    def step(self, value: float | None) -> bool:
        """Record one epoch's value (``None`` without validation: every epoch is the best);
        returns whether it improved."""
        improved = value is None or _improved(value, self.best_value, self.mode, self.min_delta)
        if improved:
            self.best_value, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        self.stopped = self.patience is not None and self.bad_epochs >= self.patience
        return improved


@dataclass
class TrainState:
    """The run's progress: epochs done (``epoch``, 1-based like the history), the history rows,
    the best epoch and the early-stopping counters; ``best`` / ``last``: the run's in-memory
    checkpoints (not part of :meth:`to_dict`)."""

    stopping: EarlyStopping
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best: Checkpoint | None = None
    last: Checkpoint | None = None

    @property
    def monitor(self) -> str:
        """The metric early stopping watches."""
        return self.stopping.metric

    def end_epoch(self, row: dict[str, Any], value: float | None) -> bool:
        """Append the history ``row`` of epoch ``row["epoch"]``, step early stopping with the
        monitored ``value``; returns whether it improved."""
        self.history.append(row)
        self.epoch = int(row["epoch"])
        improved = self.stopping.step(value)
        if improved:
            self.best_epoch = self.epoch
        return improved

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint meta entries of the state (``metrics``: those of the last epoch).

        ``history`` is the live list, as before this class existed: a checkpoint's in-memory
        meta shows the rows appended after it (the copy saved on disk does not).
        """
        row = self.history[-1]
        es = self.stopping
        return {
            "epoch": self.epoch,
            "history": self.history,
            "metrics": {k: row[k] for k in ("train_loss", *VAL_METRICS)},
            "early_stopping_metric": es.metric,
            "best_value": es.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": es.bad_epochs,
            "stopped_early": es.stopped,
        }

    @classmethod
    def from_dict(cls, meta: dict[str, Any], stopping: EarlyStopping | None = None) -> TrainState:
        """Inverse of :meth:`to_dict` (a checkpoint's meta; ``null`` history values -> NaN).

        ``stopping``: the rule to continue with (resume: the current configuration's), given
        the checkpoint's counters; without it, the checkpoint's metric under a rule that never
        stops.
        """
        if stopping is None:
            metric = str(meta.get("early_stopping_metric", ""))
            stopping = EarlyStopping(metric, "min" if metric == "val_loss" else "max", None, 0.0)
        stopping = replace(
            stopping,
            best_value=meta.get("best_value"),
            bad_epochs=int(meta.get("bad_epochs", 0)),
            stopped=bool(meta.get("stopped_early", False)),
        )
        history = [
            {k: (float("nan") if v is None else v) for k, v in row.items()}
            for row in meta["history"]
        ]
        return cls(stopping, int(meta["epoch"]), history, int(meta.get("best_epoch", 0)))
