"""The real configuration (``--env compcars``) builds, trains and extracts at 224 px.

The compcars env's parameters are used unchanged except the raw data (the tiny sample, cropped
with the env's own data_engineering settings), the weights (stand-ins in the real formats, see
conftest.py) and the run length (batch 4, two optimizer steps, a handful of images).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compcars_kedro.data.views import build_view_data, label_map
from compcars_kedro.params import (
    base_parameter_keys,
    check_combination,
    resolved_embedding_dim,
    validate_parameters,
)
from compcars_kedro.training import LossConfig, ModelConfig, TrainingConfig
from compcars_kedro.training.data import ViewData
from compcars_kedro.training.inference import extract_embeddings
from compcars_kedro.training.trainer import Trainer
from tests.conftest import ROOT
from tests.realconfig.conftest import DEVICE, NUM_WORKERS, compcars_parameters

N_TRAIN, N_EVAL, BATCH, STEPS = 8, 4, 4, 2


def _real_params(standin_weights, **selectors) -> dict:
    """compcars parameters with the stand-in CLIP folder, the selectors and a short run."""
    params = compcars_parameters({"models": {"clip": {"weights": str(standin_weights["clip_dir"])}},
                                  **selectors})
    params["training"] = {**params["training"], "batch_size": BATCH, "epochs": 1,
                          "num_workers": NUM_WORKERS, "sampler": {"kind": "auto", "m_per_class": 2}}
    return params


def _subset(data: ViewData, n: int) -> ViewData:
    texts = data.texts[:n] if data.texts is not None else None
    return ViewData(data.images, data.view_rows[:n], data.labels[:n], texts)


def test_compcars_env_validates_with_weights_in_the_caches(standin_weights) -> None:
    """The pre-run validation (hook) of --env compcars passes for every model once the weights
    are where `make weights` puts them; the tiny sample architectures do not leak in."""
    known = base_parameter_keys(ROOT / "conf")
    for model in ("resnet50", "vitb32", "clip"):
        params = _real_params(standin_weights, model=model)
        validate_parameters(params, check_weights=True, known_keys=known)
        assert "arch" not in params["models"][model] or params["models"][model]["arch"] is None
    assert resolved_embedding_dim("clip", 512) is None


@pytest.mark.parametrize(("model", "loss", "phase", "dim"), [
    ("resnet50", "ce", None, 2048),
    ("vitb32", "ce", None, 768),
    ("clip", "clip", "vision", 512),
    ("clip", "clip", "text", 512),
], ids=["resnet50", "vitb32", "clip-vision", "clip-text"])
def test_real_model_trains_and_extracts_at_224(standin_weights, crops_224, model: str,
                                               loss: str, phase: str | None, dim: int) -> None:
    selectors = {"model": model, "loss": loss, "views": "front"}
    if phase is not None:
        selectors["models"] = {"clip": {"weights": str(standin_weights["clip_dir"]),
                                        "clip": {"phase": phase}}}
    params = _real_params(standin_weights, **selectors)
    validate_parameters(params, check_weights=True)
    from compcars_kedro.params import FinetuningParams
    from compcars_kedro.validation import validate

    config = validate(FinetuningParams, {k: params[k] for k in (
        "model", "loss", "views", "embedding_dim", "models", "losses", "training", "finetuning")},
        "parameters").resolve()
    check_combination(config)
    model_cfg = ModelConfig.model_validate(config["model"])
    loss_cfg = LossConfig.model_validate(config["loss"])
    train_cfg = TrainingConfig.model_validate(config["training"])
    assert model_cfg.image_size == 224 and model_cfg.arch == {}
    assert model_cfg.weights is not None

    crops, pairs = crops_224
    labels = label_map(crops.index.loc[crops.index["split"] == "train", "class_id"])
    template = model_cfg.clip.prompt_template if loss == "clip" else None
    train, _ = build_view_data(crops, pairs, model_cfg.views, "train", labels, template)
    val, _ = build_view_data(crops, pairs, model_cfg.views, "val", labels, template)
    train, val = _subset(train, N_TRAIN), _subset(val, N_EVAL)

    trainer = Trainer(model_cfg, loss_cfg, train_cfg, train, num_classes=len(labels),
                      device=DEVICE, val=val, progress=False)  # text phase: val loss monitor
    net = trainer.model.backbone
    key, expected = standin_weights["reference"][model]
    loaded = (net.clip if model == "clip" else net.net).state_dict()[key]
    assert torch.equal(loaded.float().cpu(), expected.float()), "stand-in weights not loaded"
    if model == "clip":
        assert trainer.tokenizer is not None and trainer.tokenizer.vocab_size == 514  # CLIPTokenizer
        towers = {"vision": net.clip.vision_model, "text": net.clip.text_model}
        assert any(p.requires_grad for p in towers[phase].parameters())
        other = towers["text" if phase == "vision" else "vision"]
        assert not any(p.requires_grad for p in other.parameters())
    stats = trainer.train_epoch(0, max_steps=STEPS)
    assert stats["steps"] == STEPS and math.isfinite(stats["train_loss"])

    emb = extract_embeddings(trainer.model, val, batch_size=BATCH, device=DEVICE,
                             num_workers=NUM_WORKERS, progress=False)
    assert emb.shape == (len(val), dim) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
