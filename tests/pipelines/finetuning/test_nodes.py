"""finetuning nodes: config resolution and a real (tiny) training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compcars_kedro.pipelines.finetuning.nodes import finetune, resolve_config
from tests.conftest import tiny_finetuning_params


def _resolve(**overrides):
    p = tiny_finetuning_params(**overrides)
    return resolve_config(p["model"], p["loss"], p["views"], p["embedding_dim"], p["models"],
                          p["losses"], p["training"], p["finetuning"])


def test_selectors_pick_model_loss_views_and_head() -> None:
    cfg = _resolve(model="vitb32", loss="arcface", views="front")
    assert cfg["model"]["name"] == "vitb32" and cfg["model"]["views"] == ["front"]
    assert cfg["model"]["head"] == "metric" and cfg["model"]["embedding_dim"] == 16
    assert cfg["model"]["arch"]["num_layers"] == 2  # per-model settings merged in
    assert cfg["loss"]["name"] == "arcface" and cfg["loss"]["params"]["margin"] == 28.6
    assert cfg["variant"] == "vitb32-arcface-front"
    ce = _resolve(loss="ce")
    assert ce["model"]["head"] == "classification" and ce["model"]["embedding_dim"] is None


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model", "vgg16", r"model='vgg16' is unknown; valid names: \[.*'resnet50'.*'vitb32'"),
    ("loss", "focal", r"loss='focal' is unknown; valid names: \[.*'arcface'"),
    ("views", "side", "valid settings are 'front', 'rear', 'front\\+rear'"),
])
def test_bad_selector_fails_with_valid_names(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _resolve(**{key: value})


def test_bad_nested_key_is_named() -> None:
    with pytest.raises(ValueError, match="training"):
        _resolve(training={"epochs": 1, "lr": 0.1})
    with pytest.raises(ValueError, match="grad_clip"):
        _resolve(training={"grad_clip": 0})


def test_finetune_returns_baseline_best_last_and_history(tiny_crops, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    crops, pairs = tiny_crops
    cfg = _resolve()
    baseline, best, last, history, metrics = finetune(crops, pairs, cfg)
    assert list(history["epoch"]) == [1, 2]
    assert {"train_loss", "mean_average_precision_at_r", "lr_backbone"} <= set(history.columns)
    assert baseline.meta["stage"] == "baseline" and best.meta["stage"] == "finetuned"
    assert baseline.optimizer_state is None and last.optimizer_state is not None
    # training moved the weights away from the baseline
    key = next(k for k, v in best.model_state.items() if v.dtype.is_floating_point and v.ndim == 4)
    assert not torch.equal(best.model_state[key], baseline.model_state[key])
    # labels: the training classes, in the checkpoint, so extraction uses the same map
    train_classes = sorted(crops.index.loc[crops.index["split"] == "train", "class_id"].unique())
    assert best.meta["class_ids"] == train_classes
    assert metrics["n_classes"] == len(train_classes)
    assert np.isfinite(history["train_loss"]).all()
    assert (tmp_path / "work" / cfg["variant"] / "last" / "model.safetensors").exists()
