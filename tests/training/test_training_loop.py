"""fit(): resume == uninterrupted, early stopping, checkpoints, extraction, metrics, data path."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from compcars_kedro.training import (
    Checkpoint,
    LossConfig,
    ModelConfig,
    TrainingConfig,
    build_model,
    extract_embeddings,
    fit,
    load_checkpoint,
    model_from_checkpoint,
    retrieval_metrics,
    save_checkpoint,
)
from compcars_kedro.training.augment import prepare_images
from compcars_kedro.training.config import AugmentConfig
from compcars_kedro.training.data import ViewBatchDataset, pk_batches
from compcars_kedro.training.metrics import HISTORY_COLUMNS
from compcars_kedro.training.toy import TINY_ARCH, make_toy_data

VIT = {"name": "vitb32", "image_size": 32, "arch": TINY_ARCH["vitb32"]}
TIMING = ["train_img_per_s", "epoch_time_s"]


def _train_cfg(**kw) -> TrainingConfig:
    base = {
        "epochs": 3,
        "batch_size": 8,
        "lr_backbone": 1e-3,
        "lr_head": 1e-2,
        "warmup_steps": 2,
        "num_workers": 0,
        "seed": 7,
        "early_stopping": {"metric": "val_loss", "patience": 10},
    }
    base.update(kw)
    return TrainingConfig.model_validate(base)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    ("loss", "head", "views"),
    [
        ("arcface", "metric", ["front"]),
        ("multisimilarity", "metric", ["front", "rear"]),
        ("ce", "classification", ["front"]),
    ],
)
def test_resume_equals_uninterrupted(
    tmp_path: Path, loss: str, head: str, views: list[str]
) -> None:
    train = make_toy_data(4, 8, 32, len(views), seed=0, memmap_path=tmp_path / "crops.npy")
    val = make_toy_data(4, 4, 32, len(views), seed=1)
    mc = ModelConfig(**VIT, views=views, head=head, embedding_dim=16 if head == "metric" else None)
    lc, tc = LossConfig(name=loss), _train_cfg()
    kw = {"num_classes": 4, "device": "cpu", "progress": False, "label_names": list("abcd")}

    full = fit(mc, lc, tc, train, val, work_dir=tmp_path / "full", **kw)
    part = fit(mc, lc, tc, train, val, work_dir=tmp_path / "resumed", stop_after_epoch=1, **kw)
    assert (
        len(part.history) == 1 and load_checkpoint(tmp_path / "resumed" / "last").meta["epoch"] == 1
    )
    resumed = fit(mc, lc, tc, train, val, work_dir=tmp_path / "resumed", resume=True, **kw)

    assert list(full.history.columns) == HISTORY_COLUMNS and len(full.history) == 3
    pd.testing.assert_frame_equal(
        full.history.drop(columns=TIMING), resumed.history.drop(columns=TIMING)
    )
    a = {k: v for k, v in full.best_metrics.items() if k not in TIMING}
    b = {k: v for k, v in resumed.best_metrics.items() if k not in TIMING}
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)
    _assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    _assert_same_state(full.last.model_state, resumed.last.model_state)
    _assert_same_state(full.last.loss_state, resumed.last.loss_state)
    assert full.best.meta["epoch"] == resumed.best.meta["epoch"]
    if head == "classification":
        assert full.history["accuracy"].notna().all()
    else:
        assert full.history["accuracy"].isna().all()
    # best weights are the ones returned
    _assert_same_state(full.model.state_dict(), full.best.model_state)
    # the last checkpoint on disk carries optimizer + scheduler state, best does not
    last_dir, best_dir = tmp_path / "full" / "last", tmp_path / "full" / "best"
    assert {p.name for p in last_dir.iterdir()} == {
        "model.safetensors",
        "optimizer.safetensors",
        "meta.json",
    }
    assert (best_dir / "model.safetensors").is_file() and not (
        best_dir / "optimizer.safetensors"
    ).exists()
    meta = json.loads((last_dir / "meta.json").read_text())["meta"]
    assert meta["label_names"] == list("abcd") and len(meta["history"]) == 3
    assert meta["model_config"]["name"] == "vitb32" and meta["loss_config"]["name"] == loss


def test_early_stopping_restores_best(tmp_path: Path) -> None:
    train = make_toy_data(4, 4, 32, 1, seed=0)
    val = make_toy_data(4, 3, 32, 1, seed=1)
    tc = _train_cfg(
        epochs=6,
        early_stopping={"metric": "precision_at_1", "patience": 1, "min_delta": 1.0},
    )
    res = fit(
        ModelConfig(**VIT),
        LossConfig(name="ntxent"),
        tc,
        train,
        val,
        num_classes=4,
        device="cpu",
        progress=False,
    )
    assert len(res.history) == 2  # epoch 2 cannot improve by min_delta=1 -> stop
    assert res.best.meta["epoch"] == 1 and res.best_metrics["epoch"] == 1
    assert res.last.meta["stopped_early"] is True
    _assert_same_state(res.model.state_dict(), res.best.model_state)


def test_checkpoint_roundtrip_with_optimizer(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt = Checkpoint(
        model_state={k: v.clone() for k, v in model.state_dict().items()},
        loss_state={"W": torch.randn(2, 5)},
        meta={"epoch": 3, "x": float("nan"), "names": ["a", "b"]},
        optimizer_state=opt.state_dict(),
        scheduler_state={"last_epoch": 4, "base_lrs": [0.1]},
    )
    save_checkpoint(ckpt, tmp_path / "ck")
    save_checkpoint(ckpt, tmp_path / "ck")  # overwrite
    back = load_checkpoint(tmp_path / "ck")
    _assert_same_state(ckpt.model_state, back.model_state)
    _assert_same_state(ckpt.loss_state, back.loss_state)
    assert back.meta == {"epoch": 3, "x": None, "names": ["a", "b"]}
    assert back.scheduler_state == {"last_epoch": 4, "base_lrs": [0.1]}
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.5)
    opt2.load_state_dict(back.optimizer_state)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        _assert_same_state(s1["state"][pid], s2["state"][pid])
    # no temporaries left behind; the persistent flock file of the save lock may stay
    assert sorted(p.name for p in (tmp_path).iterdir()) == [".ck.lock", "ck"]


def test_extract_embeddings_and_model_from_checkpoint(tmp_path: Path) -> None:
    data = make_toy_data(4, 4, 32, 2, seed=3, texts=True)
    mc = ModelConfig(name="clip", image_size=32, views=["front", "rear"], arch=TINY_ARCH["clip"])
    res = fit(
        mc,
        LossConfig(name="clip"),
        _train_cfg(epochs=1, early_stopping={"metric": "precision_at_1"}),
        data,
        data,
        num_classes=4,
        device="cpu",
        work_dir=tmp_path,
        progress=False,
    )
    emb = extract_embeddings(res.model, data, batch_size=5, device="cpu", progress=False)
    assert emb.dtype == np.float32 and emb.shape == (16, 2 * 16)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        direct = res.model.embed(prepare_images(ViewBatchDataset(data)[np.arange(16)]["images"]))
    assert np.allclose(emb, direct.numpy(), atol=1e-5)
    rebuilt = model_from_checkpoint(tmp_path / "best")
    emb2 = extract_embeddings(rebuilt, data, batch_size=16, device="cpu", progress=False)
    assert np.allclose(emb, emb2, atol=1e-5)
    assert "tokenizer_json" in res.best.meta and "clip_config" in res.best.meta
    # the crops store may be larger than the model input: resized on the device
    big = make_toy_data(4, 2, 64, 2, seed=4)
    assert extract_embeddings(rebuilt, big, batch_size=4, device="cpu", progress=False).shape == (
        8,
        32,
    )


def test_retrieval_metrics() -> None:
    labels = np.repeat(np.arange(3), 4)
    perfect = np.eye(3, dtype=np.float32)[labels] + 0.01 * np.random.default_rng(0).normal(
        size=(12, 3)
    )
    m = retrieval_metrics(perfect, labels, device="cpu")
    assert m == pytest.approx(
        {"precision_at_1": 1.0, "r_precision": 1.0, "mean_average_precision_at_r": 1.0}
    )
    rng = np.random.default_rng(1)
    rand = retrieval_metrics(
        rng.normal(size=(300, 8)).astype(np.float32), rng.integers(0, 10, 300), device="cpu"
    )
    assert 0.0 < rand["precision_at_1"] < 0.4


def test_augmentation_is_seeded_and_eval_is_plain() -> None:
    x = torch.from_numpy(make_toy_data(2, 4, 32, 1).images[:8]).view(8, 1, 32, 32, 3)
    cfg = AugmentConfig()

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return prepare_images(x, augment=cfg, generator=g)

    a, b, c = run(1), run(1), run(2)
    assert a.shape == (8, 1, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    plain = prepare_images(x)
    assert torch.equal(plain, x.permute(0, 1, 4, 2, 3).float() / 255)
    off = prepare_images(x, augment=AugmentConfig(enabled=False), generator=torch.Generator())
    assert torch.equal(off, plain)


def test_memmap_dataset_pickles_by_reference_and_pk_batches(tmp_path: Path) -> None:
    data = make_toy_data(5, 8, 32, 2, memmap_path=tmp_path / "store.npy")
    assert isinstance(data.images, np.memmap)
    ds = ViewBatchDataset(data)
    blob = pickle.dumps(ds)
    assert len(blob) < data.images.nbytes // 4
    ds2 = pickle.loads(blob)
    b1, b2 = ds[[3, 0, 7]], ds2[[3, 0, 7]]
    assert b1["images"].shape == (3, 2, 32, 32, 3) and b1["images"].dtype == torch.uint8
    assert torch.equal(b1["images"], b2["images"]) and torch.equal(b1["labels"], b2["labels"])
    first = pk_batches(data.labels, 8, 4, seed=1, epoch=0)
    assert [x.tolist() for x in first] == [x.tolist() for x in pk_batches(data.labels, 8, 4, 1, 0)]
    assert sum(len(x) for x in first) == len(data) // 8 * 8
    for batch in first:
        _, counts = np.unique(data.labels[batch], return_counts=True)
        assert (counts == 4).all()
    with pytest.raises(ValueError, match="m_per_class"):
        pk_batches(data.labels, 40, 4, seed=1, epoch=0)


def test_extract_with_dataloader_workers_matches(tmp_path: Path) -> None:
    data = make_toy_data(3, 4, 32, 2, seed=5, memmap_path=tmp_path / "store.npy")
    mc = ModelConfig(**VIT, views=["front", "rear"])
    ckpt = Checkpoint(
        model_state=build_model(mc, 3).state_dict(),
        meta={"model_config": mc.model_dump(mode="json"), "num_classes": 3},
    )
    model = model_from_checkpoint(ckpt)
    a = extract_embeddings(model, data, batch_size=5, device="cpu", progress=False)
    b = extract_embeddings(model, data, batch_size=5, device="cpu", num_workers=1, progress=False)
    assert np.array_equal(a, b)
