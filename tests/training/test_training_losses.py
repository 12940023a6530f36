"""Every loss lowers on a toy problem; ArcFace weights train; CLIP same-class masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compcars_kedro.training import LossConfig, ModelConfig, TrainingConfig
from compcars_kedro.training.augment import prepare_images
from compcars_kedro.training.data import ViewBatchDataset
from compcars_kedro.training.losses import ClipLoss, ClipLossParams
from compcars_kedro.training.toy import TINY_ARCH, make_toy_data
from compcars_kedro.training.trainer import Trainer

CASES = [
    # (loss, loss params, model, head, views, steps)
    ("ce", {"label_smoothing": 0.1}, "resnet18", "classification", ["front"], 6),
    ("ce", {}, "vitb32", "classification", ["front", "rear"], 8),
    ("arcface", {"margin": 10.0, "scale": 16.0}, "vitb32", "metric", ["front"], 8),
    ("contrastive", {"miner": "pair_margin"}, "vitb32", "metric", ["front"], 8),
    ("ntxent", {"temperature": 0.1}, "vitb32", "metric", ["front"], 8),
    ("triplet", {"margin": 0.2, "miner": {"name": "triplet_margin",
                                         "args": {"margin": 0.2, "type_of_triplets": "all"}}},
     "vitb32", "metric", ["front"], 8),
    ("multisimilarity", {}, "vitb32", "metric", ["front", "rear"], 8),
    ("clip", {}, "clip", "metric", ["front"], 8),
    ("clip", {}, "clip", "metric", ["front", "rear"], 8),
]



def _trainer(
    loss: str, params: dict, model: str, head: str, views: list[str], **train_kw
) -> Trainer:
    data = make_toy_data(4, 4, 32, len(views), seed=0, texts=loss == "clip")
    mc = ModelConfig(name=model, image_size=32, views=views, head=head, arch=TINY_ARCH[model])
    lr_backbone = 1e-4 if model.startswith("resnet") else 1e-3
    tc = TrainingConfig(
        epochs=100,
        batch_size=16,
        lr_backbone=lr_backbone,
        lr_head=1e-2,
        warmup_steps=0,
        num_workers=0,
        augment={"enabled": False},
        **train_kw,
    )
    return Trainer(
        mc, LossConfig(name=loss, **params), tc, data, num_classes=4, device="cpu", progress=False
    )


def _loss_on(trainer: Trainer, batch: dict) -> float:
    with torch.no_grad():
        x = prepare_images(batch["images"])
        out = trainer._outputs(x, batch, trainer.train_tokens)
        return float(trainer.loss_module(out, batch["labels"]))


@pytest.mark.parametrize(("loss", "params", "model", "head", "views", "steps"), CASES)
def test_loss_decreases(
    loss: str, params: dict, model: str, head: str, views: list[str], steps: int
) -> None:
    torch.manual_seed(0)
    trainer = _trainer(loss, params, model, head, views)
    batch = ViewBatchDataset(trainer.train_data)[np.arange(16)]
    trainer.model.train()
    before = _loss_on(trainer, batch)
    for _ in range(steps):
        trainer.train_step(batch, None)
    after = _loss_on(trainer, batch)
    assert math.isfinite(before) and math.isfinite(after)
    assert after < 0.9 * before, (loss, model, before, after)


def test_arcface_class_weights_are_optimised() -> None:
    trainer = _trainer("arcface", {}, "vitb32", "metric", ["front"])
    w = trainer.loss_module.loss.W
    assert any(w is p for g in trainer.optimizer.param_groups for p in g["params"])
    before = w.detach().clone()
    trainer.model.train()
    trainer.train_step(ViewBatchDataset(trainer.train_data)[np.arange(16)], None)
    assert not torch.equal(before, w.detach())


def test_clip_loss_masks_same_class_pairs() -> None:
    img = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [1.0, 0.2]]), dim=-1)
    txt = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1], [0.9, 0.1]]), dim=-1)
    labels = torch.tensor([3, 3])
    outputs = {
        "view_features": img[:, None, :],
        "text_embedding": txt,
        "logit_scale": torch.tensor(math.log(20.0)),
    }
    masked = ClipLoss(ClipLossParams(mask_same_class=True))(outputs, labels)
    unmasked = ClipLoss(ClipLossParams(mask_same_class=False))(outputs, labels)
    assert unmasked.item() == pytest.approx(math.log(2.0), abs=1e-5)
    assert masked.item() < unmasked.item()
    assert masked.item() == pytest.approx(0.0, abs=1e-6)
    # different classes: both variants agree
    labels2 = torch.tensor([0, 1])
    a = ClipLoss(ClipLossParams(mask_same_class=True))(outputs, labels2)
    b = ClipLoss(ClipLossParams(mask_same_class=False))(outputs, labels2)
    assert a.item() == pytest.approx(b.item())


def test_clip_logit_scale_is_clamped() -> None:
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    labels = torch.arange(4)
    loss = ClipLoss(ClipLossParams())
    at_cap = loss.info_nce(img, txt, labels, torch.tensor(math.log(100.0)))
    above = loss.info_nce(img, txt, labels, torch.tensor(math.log(1000.0)))
    assert at_cap.item() == pytest.approx(above.item())
