"""TrainState <-> checkpoint meta (today's keys), EarlyStopping.step's rule."""

from __future__ import annotations

import json
import math

import pytest

from compcars_kedro.training.checkpoint import _jsonable
from compcars_kedro.training.config import EarlyStoppingConfig
from compcars_kedro.training.state import EarlyStopping, TrainState

#: the state keys of a checkpoint meta as written before TrainState existed (resume must read them)
_ROWS = [
    {"epoch": e, "train_loss": t, "val_loss": v, "precision_at_1": 0.5, "r_precision": 0.4,
     "mean_average_precision_at_r": 0.3, "accuracy": None, "zero_shot_accuracy": None,
     "lr_backbone": 1e-4, "lr_head": 1e-3, "train_img_per_s": 9.0, "epoch_time_s": 5.0,
     "monitor": "val_loss"}
    for e, t, v in ((1, 3.0, 2.9), (2, 2.0, 2.1))
]
OLD_META = {
    "epoch": 2,
    "history": _ROWS,
    "metrics": {k: _ROWS[1][k] for k in ("train_loss", "val_loss", "precision_at_1",
                                         "r_precision", "mean_average_precision_at_r",
                                         "accuracy", "zero_shot_accuracy")},
    "early_stopping_metric": "val_loss",
    "best_value": 2.1,
    "best_epoch": 2,
    "bad_epochs": 0,
    "stopped_early": False,
}


def _row(epoch: int, value: float) -> dict[str, float]:
    nan = float("nan")
    return {"epoch": epoch, "train_loss": 1.0, "val_loss": value, "precision_at_1": nan,
            "r_precision": nan, "mean_average_precision_at_r": nan, "accuracy": nan,
            "zero_shot_accuracy": nan, "monitor": "val_loss"}


@pytest.mark.parametrize(
    ("mode", "min_delta", "values", "improved"),
    [
        ("max", 0.1, [0.5, 0.55, 0.61, 0.6], [True, False, True, False]),
        ("min", 0.1, [1.0, 0.95, 0.85, 0.9], [True, False, True, False]),
        ("max", 0.0, [float("nan"), 0.2, float("nan")], [True, True, False]),  # NaN best loses
    ],
)
def test_early_stopping_step_follows_mode_and_min_delta(mode, min_delta, values, improved) -> None:
    es = EarlyStopping("m", mode, patience=None, min_delta=min_delta)
    assert [es.step(v) for v in values] == improved
    assert not es.stopped  # patience=None never stops


def test_early_stopping_stops_after_patience_bad_epochs_and_without_val_never() -> None:
    es = EarlyStopping.from_config(EarlyStoppingConfig(metric="val_loss", patience=2), "val_loss")
    assert es.mode == "min"
    assert [es.step(v) for v in (1.0, 1.0)] == [True, False] and not es.stopped
    assert es.step(1.5) is False and es.stopped and es.bad_epochs == 2 and es.best_value == 1.0
    free = EarlyStopping("m", "max", patience=1, min_delta=0.0)
    assert all(free.step(None) for _ in range(3)) and not free.stopped  # no validation


def test_old_checkpoint_meta_resumes_and_round_trips() -> None:
    rule = EarlyStopping("val_loss", "min", patience=3, min_delta=0.0)
    state = TrainState.from_dict(json.loads(json.dumps(OLD_META)), rule)
    assert (state.epoch, state.best_epoch, state.monitor) == (2, 2, "val_loss")
    es = state.stopping
    assert (es.best_value, es.bad_epochs, es.stopped, es.patience) == (2.1, 0, False, 3)
    assert math.isnan(state.history[0]["zero_shot_accuracy"])  # null -> NaN
    assert rule.best_value is None  # the rule given is not changed
    assert _jsonable(state.to_dict()) == OLD_META  # same keys, same values


def test_end_epoch_then_to_dict_is_what_resume_reads() -> None:
    state = TrainState(EarlyStopping("val_loss", "min", patience=1, min_delta=0.0))
    assert state.end_epoch(_row(1, 2.0), 2.0) is True
    assert state.end_epoch(_row(2, 2.5), 2.5) is False
    meta = _jsonable(state.to_dict())
    assert meta["metrics"]["val_loss"] == 2.5 and meta["stopped_early"] is True
    back = TrainState.from_dict(meta, EarlyStopping("val_loss", "min", 1, 0.0))
    assert (back.epoch, back.best_epoch, back.stopping.best_value, back.stopping.stopped) == (
        2, 1, 2.0, True,
    )
    plain = TrainState.from_dict(meta)  # no rule: the recorded values, never stops
    assert plain.monitor == "val_loss" and plain.stopping.patience is None
