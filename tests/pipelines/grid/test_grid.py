"""Experiment grid: expansion, failure isolation, skip-existing, collection, CLIP layers table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from compcars_kedro.grid import (
    Variant,
    VariantFailed,
    expand_clip_layers,
    expand_grid,
    guard,
    variant_done,
)
from compcars_kedro.pipelines.grid.nodes import clip_layers_table
from compcars_kedro.pipelines.grid.pipeline import study_pipeline
from tests.conftest import ROOT, tiny_finetuning_params


def test_grid_expansion_and_names() -> None:
    variants = expand_grid({"models": ["resnet50", "clip"], "losses": ["ce", "clip"],
                            "views": ["front", "front+rear"], "seeds": [0, 1]})
    # the clip loss only pairs with the clip model: 2 views x 2 seeds x (2 + 1) combos
    assert len(variants) == 12
    assert {v.name for v in variants} >= {"resnet50_ce_front_s0", "clip_clip_frontrear_s1"}
    assert len({v.name for v in variants}) == len(variants)
    layers = expand_clip_layers({"components": ["vision", "text"], "layers": [1, 12]})
    assert [v.name for v in layers] == ["clip_vision_l01_s0", "clip_vision_l12_s0",
                                        "clip_text_l01_s0", "clip_text_l12_s0"]
    assert layers[3].overrides["models"]["clip"]["clip"] == {"phase": "text", "trainable_layers": 12}
    with pytest.raises(ValueError, match="0..12"):
        expand_clip_layers({"layers": [13]})
    # the N=0 control, several seeds; text-tower runs early-stop on val_loss
    study = expand_clip_layers({"components": ["vision", "text"], "layers": [0, 12],
                                "seeds": [0, 1, 2]})
    assert len(study) == 12 and {v.seed for v in study} == {0, 1, 2}
    control = next(v for v in study if v.name == "clip_text_l00_s2")
    assert control.overrides["models"]["clip"]["clip"]["trainable_layers"] == 0
    assert control.overrides["training"]["early_stopping"]["metric"] == "val_loss"
    assert all("training" not in v.overrides for v in study if v.extra["component"] == "vision")


def test_guard_turns_errors_into_markers_and_passes_them_on() -> None:
    def boom(x: int) -> tuple[int, int]:
        raise RuntimeError("bad")

    a, b = guard(boom, "v1", 2)(1)
    assert isinstance(a, VariantFailed) and a is b and "RuntimeError: bad" in a.error
    assert guard(lambda x: x + 1, "v1", 1)(a) is a  # downstream node does not run
    assert guard(lambda x: x + 1, "v1", 1)(1) == 2


@pytest.fixture
def grid_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_crops) -> DataCatalog:
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((ROOT / "conf/base/catalog_grid.yml").read_text())
    catalog = DataCatalog.from_config(config)
    p = tiny_finetuning_params()
    p["training"]["epochs"] = 1
    shared = {"embedding_dim": p["embedding_dim"], "models": p["models"], "losses": {},
              "training": p["training"], "finetuning": p["finetuning"],
              "embeddings": {"batch_size": 16},
              "clustering": {"reducers": ["pca"], "clusterers": ["kmeans", "hdbscan"],
                             "reducer_params": {"pca": {"n_components": 4}}}}
    for key, value in shared.items():
        catalog[f"params:{key}"] = MemoryDataset(value)
    catalog["crops"] = MemoryDataset(tiny_crops[0], copy_mode="assign")
    catalog["multiview_samples"] = MemoryDataset(tiny_crops[1])
    return catalog


def test_failing_variant_is_reported_and_others_survive(grid_catalog: DataCatalog,
                                                        tmp_path: Path) -> None:
    ok = Variant("resnet18", "multisimilarity", "front+rear", 0)
    bad = Variant("resnet18", "multisimilarity", "front+rear", 1,
                  overrides={"training": {"grad_clip": -1.0}})  # invalid -> fails early
    SequentialRunner().run(study_pipeline([ok, bad], "grid"), grid_catalog)
    status = pd.read_csv(next(tmp_path.glob("data/08_reporting/grid/status.csv/*/status.csv")))
    by_variant = status.set_index("variant")
    assert by_variant.loc[ok.name, "status"] == "ok"
    assert by_variant.loc[bad.name, "status"] == "failed"
    assert "grad_clip" in by_variant.loc[bad.name, "error"]
    clustering = pd.read_csv(next(tmp_path.glob(
        "data/08_reporting/grid/clustering_metrics.csv/*/clustering_metrics.csv")))
    assert set(clustering["variant"]) == {ok.name}  # the good variant's results are kept
    assert {"model", "loss", "views", "seed", "study"} <= set(clustering.columns)
    assert (tmp_path / "data/08_reporting/grid" / bad.name / "finetuning_metrics").is_dir()
    # skip-existing: the finished variant is left out of the next build, the failed one is not
    assert variant_done(tmp_path / "data/08_reporting/grid" / ok.name / "status")
    assert not variant_done(tmp_path / "data/08_reporting/grid" / bad.name / "status")
    rebuilt = study_pipeline([ok, bad], "grid")
    names = {n.name for n in rebuilt.nodes}
    assert f"{bad.name}.finetune" in names and f"{ok.name}.finetune" not in names


def test_clip_layers_table_picks_finetuned_split_rows() -> None:
    retrieval = pd.DataFrame({
        "variant": ["a", "a", "b", "b"], "component": ["vision"] * 4,
        "trainable_layers": [1, 1, 6, 6], "seed": [0] * 4,
        "source": ["finetuned", "baseline"] * 2, "split": ["unseen"] * 4,
        "mean_average_precision_at_r": [0.3, 0.1, 0.5, 0.1], "precision_at_1": [0.4, 0.2, 0.6, 0.2]})
    clustering = pd.DataFrame({
        "variant": ["a", "b"], "source": ["finetuned"] * 2, "split": ["unseen"] * 2,
        "selection_mode": ["transfer"] * 2, "reducer": ["pca"] * 2,
        "clusterer": ["hdbscan"] * 2, "ari": [0.2, 0.4], "ami": [0.3, 0.5]})
    table = clip_layers_table(pd.DataFrame(), retrieval, clustering, {})
    assert list(table["trainable_layers"]) == [1, 6]
    assert list(table["mean_average_precision_at_r"]) == [0.3, 0.5]
    assert list(table["ari"]) == [0.2, 0.4]
