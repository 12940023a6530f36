"""embeddings nodes: same fusion as training, normalised vectors, honest label maps."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.datasets.embeddings import EmbeddingSet
from compcars_kedro.pipelines.embeddings.nodes import embed_splits, retrieval_table
from compcars_kedro.pipelines.finetuning.nodes import finetune, resolve_config
from tests.conftest import tiny_finetuning_params

KEYS = {"variant": "v", "keys": {"variant": "v", "model": "m", "loss": "l", "views": "front", "seed": 0}}


@pytest.fixture(scope="module")
def checkpoints(tiny_crops, tmp_path_factory):
    p = tiny_finetuning_params(embedding_dim=None, training={
        "epochs": 1, "batch_size": 8, "num_workers": 0, "sampler": {"m_per_class": 2}})
    work = tmp_path_factory.mktemp("work")
    p["finetuning"]["work_dir"] = str(work)
    cfg = resolve_config(p["model"], p["loss"], p["views"], p["embedding_dim"], p["models"],
                         p["losses"], p["training"], p["finetuning"])
    baseline, best, *_ = finetune(*tiny_crops, cfg)
    yield cfg, baseline, best
    shutil.rmtree(work, ignore_errors=True)  # ~175 MB of checkpoints


def test_embeddings_concatenate_views_and_are_normalised(tiny_crops, checkpoints) -> None:
    crops, pairs = tiny_crops
    _, baseline, best = checkpoints
    val, test, unseen = embed_splits(crops, pairs, best, {"batch_size": 4})
    # resnet18 (512-d) x 2 views, no projection: the fused vector is the concatenation
    assert val.vectors.shape[1] == 2 * 512
    for emb in (val, test, unseen):
        np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-4)
        assert {"front_image_id", "rear_image_id", "label", "class_id"} <= set(emb.index.columns)
    # seen splits use the training label map; unseen classes never appear in training
    train_ids = set(best.meta["class_ids"])
    assert set(val.index["class_id"]) <= train_ids and set(test.index["class_id"]) <= train_ids
    assert set(unseen.index["class_id"]).isdisjoint(train_ids)
    assert (unseen.index["label"] >= len(train_ids)).all()
    # baseline and fine-tuned embed the same samples in the same order
    b_val = embed_splits(crops, pairs, baseline, {"batch_size": 4})[0]
    assert list(b_val.index["sample_id"]) == list(val.index["sample_id"])
    assert not np.allclose(b_val.vectors, val.vectors)


def test_baseline_is_the_backbone_identical_for_every_loss(tiny_crops, tmp_path) -> None:
    """One baseline per backbone: the fused backbone features before any head, so a ce run
    (classifier) and a multisimilarity run (16-d projection) have bitwise equal baselines."""
    crops, pairs = tiny_crops
    runs = {}
    for loss in ("ce", "multisimilarity"):
        p = tiny_finetuning_params(loss=loss, training={
            "epochs": 1, "batch_size": 8, "num_workers": 0, "sampler": {"m_per_class": 2}})
        p["finetuning"]["work_dir"] = str(tmp_path / f"work_{loss}")
        cfg = resolve_config(p["model"], p["loss"], p["views"], p["embedding_dim"], p["models"],
                             p["losses"], p["training"], p["finetuning"])
        baseline, best, *_ = finetune(crops, pairs, cfg)
        assert baseline.meta["stage"] == "baseline" and baseline.meta["trained_head"] == (
            "classification" if loss == "ce" else "metric")
        assert all(k.startswith("backbone.") for k in baseline.model_state)
        runs[loss] = (embed_splits(crops, pairs, baseline, {"batch_size": 8}),
                      embed_splits(crops, pairs, best, {"batch_size": 8}))
    for ce, ms in zip(runs["ce"][0], runs["multisimilarity"][0], strict=True):
        assert ce.vectors.shape[1] == 2 * 512  # fused resnet18 features of both views
        np.testing.assert_array_equal(ce.vectors, ms.vectors)
    assert runs["multisimilarity"][1][0].vectors.shape[1] == 16  # the trained head's output


def test_retrieval_table_scores_perfect_and_random_embeddings() -> None:
    labels = np.repeat(np.arange(4), 3)
    perfect = np.eye(4)[labels] + 1e-3 * np.random.default_rng(0).normal(size=(12, 4))
    idx = pd.DataFrame({"label": labels})
    good = EmbeddingSet(perfect.astype(np.float32), idx)
    rand = EmbeddingSet(np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32), idx)
    table = retrieval_table(good, good, good, rand, rand, rand, KEYS)
    assert len(table) == 6
    top = table.loc[table["source"] == "baseline"]
    assert (top["mean_average_precision_at_r"] > 0.99).all()
    assert (top["precision_at_1"] > 0.99).all()
    low = table.loc[table["source"] == "finetuned", "mean_average_precision_at_r"]
    assert (low < 0.9).all()


def test_clip_image_text_run_gets_zero_shot_accuracy(tiny_crops, tmp_path) -> None:
    crops, pairs = tiny_crops
    arch = {"patch_size": 16, "vision_hidden_size": 32, "vision_intermediate_size": 64,
            "vision_layers": 2, "vision_heads": 2, "text_hidden_size": 32,
            "text_intermediate_size": 64, "text_layers": 2, "text_heads": 2, "vocab_size": 256,
            "max_position_embeddings": 24, "projection_dim": 16}
    p = tiny_finetuning_params(model="clip", loss="clip", views="front", embedding_dim=None)
    p["models"]["clip"] = {"image_size": 32, "arch": arch,
                           "clip": {"phase": "text", "trainable_layers": 1, "max_length": 24}}
    p["training"] = {"epochs": 1, "batch_size": 8, "num_workers": 0}
    p["finetuning"]["work_dir"] = str(tmp_path / "clipwork")
    cfg = resolve_config(p["model"], p["loss"], p["views"], p["embedding_dim"], p["models"],
                         p["losses"], p["training"], p["finetuning"])
    baseline, best, *_ = finetune(crops, pairs, cfg)
    sets = [*embed_splits(crops, pairs, baseline, {"batch_size": 8}),
            *embed_splits(crops, pairs, best, {"batch_size": 8})]
    for emb in sets:
        # predictions are classes of the evaluated split itself (its own prompts)
        assert set(emb.index["zero_shot_class_id"]) <= set(emb.index["class_id"])
    table = retrieval_table(*sets, {**KEYS, "keys": {**KEYS["keys"], "model": "clip"}})
    assert table["zero_shot_accuracy"].between(0, 1).all()
    # the text phase leaves the image tower untouched: image embeddings equal the baseline's
    np.testing.assert_allclose(sets[2].vectors, sets[5].vectors, atol=1e-5)
