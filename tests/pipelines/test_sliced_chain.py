"""finetuning -> embeddings -> clustering as real Kedro pipelines, sliced, through a runner."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset, Version
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset

from compcars_kedro.datasets import CheckpointDataset
from compcars_kedro.pipelines import clustering, embeddings, finetuning
from tests.conftest import tiny_finetuning_params


def test_sliced_chain_from_finetune_to_clustering(tiny_crops, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = tiny_finetuning_params()
    p["training"]["epochs"] = 1
    full = finetuning.create_pipeline() + embeddings.create_pipeline() + \
        clustering.create_pipeline()
    sliced = full.from_nodes("finetune")
    names = {n.name for n in sliced.nodes}
    assert "resolve_finetuning_config" not in names and "cluster_embeddings" in names
    from compcars_kedro.pipelines.finetuning.nodes import resolve_config

    config = resolve_config(p["model"], p["loss"], p["views"], p["embedding_dim"], p["models"],
                            {}, p["training"], p["finetuning"])
    version = Version(None, None)
    catalog = DataCatalog({
        "crops": MemoryDataset(tiny_crops[0], copy_mode="assign"),
        "multiview_samples": MemoryDataset(tiny_crops[1]),
        "image_splits": MemoryDataset(tiny_crops[0].index[["image_id", "split"]]),
        "finetuning_config": MemoryDataset(config),
        "params:embeddings": MemoryDataset({"batch_size": 8}),
        "params:clustering": MemoryDataset({
            "reducers": ["pca"], "clusterers": ["kmeans", "agglomerative"],
            "reducer_params": {"pca": {"n_components": 4}},
            "grids": {"agglomerative": {"mean_cluster_size": [2, 3]}}}),
        "finetuned_checkpoint": CheckpointDataset(path=str(tmp_path / "ckpt"), version=version),
        "clustering_metrics": CSVDataset(filepath=str(tmp_path / "clustering.csv")),
        "retrieval_metrics": CSVDataset(filepath=str(tmp_path / "retrieval.csv")),
    })
    SequentialRunner().run(sliced, catalog)
    table = pd.read_csv(tmp_path / "clustering.csv")
    assert set(table["source"]) == {"baseline", "finetuned"}
    assert set(table["models"]) == {"seen", "unseen"}
    assert set(table["clusterer"]) == {"kmeans", "agglomerative"}
    retrieval = pd.read_csv(tmp_path / "retrieval.csv")
    assert len(retrieval) == 6 and retrieval["variant"].eq(config["variant"]).all()
    ckpt = next((tmp_path / "ckpt").glob("*/ckpt"))
    assert (ckpt / "model.safetensors").exists()
