"""Synthetic results (no training): the inputs of the reporting pipeline for several runs.

Shared by tests/reporting and tests/pipelines/reporting (``from tests.reporting import ...``).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.data.raw import RawSource
from compcars_kedro.types import CropsStore, EmbeddingSet

#: (model, loss, views) of the synthetic grid
CONFIGS = [("resnet18", "multisimilarity", "front+rear"), ("vitb32", "ce", "front+rear")]
SEEDS = [0, 1]
SEEN = ["Audi A4", "Audi A6", "BMW X5", "Kia Rio"]
UNSEEN = ["Ford Ka", "Seat Ibiza", "Fiat Panda"]
PER_CLASS = 5
CROP = 8

#: small, fast reporting parameters (PCA maps, low dpi)
FAST_PARAMS: dict[str, Any] = {
    "dpi": 40,
    "headline": {"selection_mode": "transfer", "reducer": "pca", "clusterer": "hdbscan"},
    "scatter": {"reducer": "pca", "sources": ["finetuned"], "splits": ["test", "unseen"]},
    "gallery": {"splits": ["unseen"], "n_pure": 2, "n_mixed": 1, "thumbnails_per_cluster": 4},
}


def keys_of(model: str, loss: str, views: str, seed: int) -> dict[str, Any]:
    return {"variant": f"{model}-{loss}-{views}", "model": model, "loss": loss, "views": views,
            "seed": seed}


def finetuning_config(model: str = "vitb32", loss: str = "ce", views: str = "front+rear",
                      seed: int = 0) -> dict[str, Any]:
    keys = keys_of(model, loss, views, seed)
    return {"variant": keys["variant"], "keys": keys,
            "model": {"name": model, "weights": None, "image_size": 32, "views": views.split("+"),
                      "head": "classification" if loss == "ce" else "metric", "embedding_dim": 16},
            "loss": {"name": loss, "params": {}},
            "training": {"epochs": 3, "batch_size": 8, "lr_backbone": 1e-3, "lr_head": 3e-3,
                         "seed": seed}}


def _value(config_index: int, seed: int, source: str, split: str, metric: str) -> float:
    """Deterministic, distinct values: fine-tuned > baseline, config 1 > config 0 on unseen."""
    base = {"precision_at_1": 0.5, "r_precision": 0.3, "mean_average_precision_at_r": 0.2,
            "ari": 0.1, "ami": 0.2, "nmi": 0.4, "purity": 0.5}[metric]
    gain = 0.2 if source == "finetuned" else 0.0
    cfg = 0.1 * config_index if split == "unseen" else -0.05 * config_index
    return round(base + gain + cfg + 0.01 * seed, 6)


def training_history(configs=CONFIGS, seeds=SEEDS, epochs: int = 3) -> pd.DataFrame:
    rows = []
    for i, (model, loss, views) in enumerate(configs):
        for seed in seeds:
            for epoch in range(1, epochs + 1):
                rows.append({"epoch": epoch, "train_loss": 2.0 / epoch + 0.1 * seed,
                             "val_loss": 1.5 / epoch, "precision_at_1": 0.3 + 0.1 * epoch,
                             "r_precision": 0.2 + 0.05 * epoch,
                             "mean_average_precision_at_r": 0.1 + 0.1 * epoch + 0.01 * i,
                             "accuracy": 0.4 + 0.1 * epoch if loss == "ce" else np.nan,
                             "lr_backbone": 1e-3 / epoch, "lr_head": 3e-3 / epoch,
                             "train_img_per_s": 100.0, "epoch_time_s": 2.0,
                             **keys_of(model, loss, views, seed)})
    return pd.DataFrame(rows)


def retrieval_metrics(configs=CONFIGS, seeds=SEEDS) -> pd.DataFrame:
    rows = []
    for i, (model, loss, views) in enumerate(configs):
        for seed in seeds:
            for source in ("baseline", "finetuned"):
                for split in ("val", "test", "unseen"):
                    rows.append({**keys_of(model, loss, views, seed), "source": source,
                                 "split": split, "n_samples": 20, "n_classes": 4,
                                 **{m: _value(i, seed, source, split, m) for m in
                                    ("precision_at_1", "r_precision", "mean_average_precision_at_r")}})
    return pd.DataFrame(rows)


def clustering_metrics(configs=CONFIGS, seeds=SEEDS) -> pd.DataFrame:
    rows = []
    for i, (model, loss, views) in enumerate(configs):
        for seed in seeds:
            for source in ("baseline", "finetuned"):
                for split, models in (("test", "seen"), ("unseen", "unseen")):
                    for mode in ("internal", "transfer"):
                        for clusterer in ("hdbscan", "kmeans"):
                            shift = 0.05 if clusterer == "kmeans" else 0.0
                            rows.append({
                                **keys_of(model, loss, views, seed), "source": source,
                                "split": split, "models": models, "selection_mode": mode,
                                "selection_split": "val" if mode == "transfer" else "none",
                                "reducer": "pca", "clusterer": clusterer,
                                "uses_true_k": clusterer == "kmeans", "params": "{}",
                                "resolved_params": "{}", "selection_score": 0.5,
                                "n_grid_points": 3, "input_dim": 8, "runtime_s": 0.1,
                                "reduce_runtime_s": 0.01,
                                **{m: _value(i, seed, source, split, m) + shift
                                   for m in ("ari", "ami", "nmi", "purity")},
                                "ari_nonnoise": 0.5, "ami_nonnoise": 0.5, "nmi_nonnoise": 0.5,
                                "pct_pure_clusters": 50.0, "pct_dominant_clusters": 75.0,
                                "silhouette": 0.3, "n_clusters": 4, "noise_fraction": 0.1,
                                "n_points": 20, "n_true_classes": 4})
    return pd.DataFrame(rows)


def embedding_set(names: list[str], split: str, source: str, seed: int, dim: int = 8,
                  spread: float = 0.3) -> EmbeddingSet:
    """Blobs around per-class centres fixed by ``seed``; the noise differs per split."""
    centers = np.random.default_rng(seed).normal(size=(len(names), dim)) * 3
    labels = np.repeat(np.arange(len(names)), PER_CLASS)
    noise = np.random.default_rng([seed, len(split), ord(split[0])]).normal(size=(len(labels), dim))
    x = centers[labels] + spread * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"{split}:{labels[k]}:{k}" for k in range(len(labels))]
    index = pd.DataFrame({
        "sample_id": ids, "split": split, "class_id": [100 + j for j in labels],
        "class_name": [names[j] for j in labels], "make": [names[j].split()[0] for j in labels],
        "model": [names[j].split()[1] for j in labels], "type": "sedan", "label": labels,
        "front_image_id": [f"{s}-f" for s in ids], "rear_image_id": [f"{s}-r" for s in ids],
        "source": source})
    return EmbeddingSet(x.astype(np.float32), index)


def embeddings() -> dict[str, EmbeddingSet]:
    """``embeddings_<source>_<split>`` sets; val and test share the seen models."""
    out = {}
    for s_i, source in enumerate(("baseline", "finetuned")):
        for p_i, (split, names) in enumerate((("val", SEEN), ("test", SEEN), ("unseen", UNSEEN))):
            out[f"embeddings_{source}_{split}"] = embedding_set(
                names, split, source, seed=10 * s_i + (0 if split in ("val", "test") else p_i))
    return out


def crops_for(sets: dict[str, EmbeddingSet]) -> CropsStore:
    ids = []
    for emb in sets.values():
        ids += list(emb.index["front_image_id"]) + list(emb.index["rear_image_id"])
    ids = sorted(set(ids))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(len(ids), CROP, CROP, 3), dtype=np.uint8)
    index = pd.DataFrame({"image_id": ids, "split": [i.split(":")[0] for i in ids]})
    return CropsStore(images=images, index=index)


def cluster_assignments(sets: dict[str, EmbeddingSet], keys: dict[str, Any]) -> pd.DataFrame:
    """Clusters = true classes, except that the last two classes share one (mixed) cluster and
    the first sample of each split is noise."""
    rows = []
    for source in ("baseline", "finetuned"):
        for split, models in (("test", "seen"), ("unseen", "unseen")):
            emb = sets[f"embeddings_{source}_{split}"]
            labels = emb.index["label"].to_numpy().copy()
            top = labels.max()
            labels[labels == top] = top - 1
            labels[0] = -1
            for mode in ("internal", "transfer"):
                for clusterer in ("hdbscan", "kmeans"):
                    rows.append(pd.DataFrame({
                        "row": np.arange(len(labels)), "reducer": "pca", "clusterer": clusterer,
                        "cluster": labels, "sample_id": emb.index["sample_id"],
                        "selection_mode": mode, **keys, "source": source, "split": split,
                        "models": models,
                        "selection_split": "val" if mode == "transfer" else "none"}))
    return pd.concat(rows, ignore_index=True)


SPLIT_SUMMARY = {"images_per_split": {"train": 80, "val": 40, "test": 40, "unseen": 30},
                 "classes_per_split": {"train": 4, "val": 4, "test": 4, "unseen": 3},
                 "pairs_per_split": {"train": 40, "val": 20, "test": 20, "unseen": 15},
                 "excluded": {"viewpoint_not_kept": 3},
                 "params": {"viewpoints": ["front", "rear"], "seed": 42}}


def _raw(root: Path | None) -> RawSource:
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="raw-"))
        atexit.register(shutil.rmtree, root, True)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sample_info.json").write_text(json.dumps({"counts": {"images_on_disk": 190,
                                                                  "models": 7, "makes": 6}}))
    return RawSource(root, "compcars")


def pipeline_inputs(config: dict[str, Any] | None = None, configs=CONFIGS, seeds=SEEDS,
                    params: dict[str, Any] | None = None,
                    clip_layers: pd.DataFrame | None = None,
                    raw_root: Path | None = None) -> dict[str, Any]:
    """Every free input of the reporting pipeline, by catalog name (``raw_root``: a folder
    standing for the raw data; a ``sample_info.json`` is written in it)."""
    config = config or finetuning_config()
    sets = embeddings()
    reporting = {**FAST_PARAMS, **(params or {})}
    return {
        "training_history": training_history(configs, seeds),
        "retrieval_metrics": retrieval_metrics(configs, seeds),
        "clustering_metrics": clustering_metrics(configs, seeds),
        "cluster_assignments": cluster_assignments(sets, config["keys"]),
        **sets,
        "crops": crops_for(sets),
        "compcars_raw": _raw(raw_root),
        "finetuning_config": config,
        "split_summary": SPLIT_SUMMARY,
        "clip_layers_table": clip_layers,
        "matched_metrics": matched_metrics(),
        "params:reporting": reporting,
        "parameters": {"reporting": reporting, "clustering": {"seed": 42},
                       "model": config["keys"]["model"], "loss": config["keys"]["loss"]},
    }


def matched_metrics() -> pd.DataFrame:
    """Per-draw matched-subsample rows (clustering pipeline layout): 3 draws, 3 classes x 4."""
    rows = []
    for source in ("baseline", "finetuned"):
        for split, models, ari in (("test", "seen", 0.5), ("unseen", "unseen", 0.3)):
            for draw in range(3):
                front = {"source": source, "split": split, "models": models, "draw": draw,
                         "n_classes": 3, "n_samples": 12}
                rows.append({**front, "kind": "retrieval",
                             "mean_average_precision_at_r": ari + 0.1})
                rows.append({**front, "kind": "clustering", "selection_mode": "transfer",
                             "reducer": "pca", "clusterer": "hdbscan",
                             "ari": ari + 0.01 * draw, "ami": ari, "noise_fraction": 0.1})
    return pd.DataFrame(rows)


def clip_layers_table() -> pd.DataFrame:
    rows = []
    for component in ("vision", "text"):
        for layers in (0, 2, 4, 8):
            for seed in (0, 1):
                slope = 0.02 if component == "vision" else -0.01
                rows.append({"component": component, "trainable_layers": layers,
                             "mean_average_precision_at_r": 0.3 + slope * layers + 0.01 * seed
                             - (0.002 * layers ** 2 if component == "vision" else 0.0),
                             "ari": 0.2 + 0.5 * slope * layers + 0.005 * seed,
                             **keys_of("clip", "clip", "front", seed)})
    return pd.DataFrame(rows)
