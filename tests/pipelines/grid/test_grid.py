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
    assert {v.name for v in variants} >= {"resnet50_ce_front_s0_ss42", "clip_clip_frontrear_s1_ss42"}
    assert len({v.name for v in variants}) == len(variants)
    # training seeds x split seeds: the class split varies between replicates
    crossed = expand_grid({"models": ["resnet18"], "losses": ["ce"], "seeds": [0, 1],
                           "split_seeds": [7, 8]})
    assert {(v.seed, v.split_seed) for v in crossed} == {(0, 7), (0, 8), (1, 7), (1, 8)}
    assert {v.name for v in crossed} >= {"resnet18_ce_frontrear_s0_ss7", "resnet18_ce_frontrear_s1_ss8"}
    assert crossed[0].keys["split_seed"] == 7
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
    return make_grid_catalog(tiny_crops)


def make_grid_catalog(tiny_crops) -> DataCatalog:
    """The grid's catalog (conf/base/catalog_grid.yml) with tiny shared inputs in memory."""
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
    catalog["image_splits"] = MemoryDataset(tiny_crops[0].index[["image_id", "split"]])
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


def test_variant_with_another_split_seed_uses_its_own_split_without_recropping(
        grid_catalog: DataCatalog, tmp_path: Path, tiny_sample: Path) -> None:
    from compcars_kedro.data.raw import detect_source
    from compcars_kedro.pipelines.data_engineering.nodes import (
        parse_raw,
        validate_images,
    )
    from tests.conftest import TINY_DE_PARAMS

    raw = detect_source(tiny_sample)
    valid, _, hashes = validate_images(parse_raw(raw), raw, TINY_DE_PARAMS)
    grid_catalog["validated_images"] = MemoryDataset(valid)
    grid_catalog["image_hashes"] = MemoryDataset(hashes)
    grid_catalog["params:data_engineering"] = MemoryDataset(TINY_DE_PARAMS)
    variant = Variant("resnet18", "multisimilarity", "front+rear", 0, split_seed=5)
    pipe = study_pipeline([variant], "grid")
    finetune = next(n for n in pipe.nodes if n.name == f"{variant.name}.finetune")
    assert {"crops", "split_ss5.multiview_samples", "split_ss5.image_splits"} <= set(finetune.inputs)
    SequentialRunner().run(pipe, grid_catalog)
    splits = pd.read_parquet(next(tmp_path.glob(
        "data/05_model_input/grid/split_ss5/image_splits.parquet/*/image_splits.parquet")))
    crops_split = grid_catalog.load("crops").index.set_index("image_id")["split"]
    assert set(splits["image_id"]) <= set(crops_split.index)
    unseen = set(splits.loc[splits["split"] == "unseen", "class_id"])
    assert unseen != set(grid_catalog.load("crops").index.query("split == 'unseen'")["class_id"])
    emb = next(tmp_path.glob(f"data/07_model_output/grid/{variant.name}/embeddings/"
                             "finetuned_unseen/*/finetuned_unseen/index.parquet"))
    assert set(pd.read_parquet(emb)["class_id"]) == unseen  # evaluated on its own split
    status = pd.read_csv(next(tmp_path.glob("data/08_reporting/grid/status.csv/*/status.csv")))
    assert status.set_index("variant").loc[variant.name, "split_seed"] == 5
    retrieval = pd.read_csv(next(tmp_path.glob(
        "data/08_reporting/grid/retrieval_metrics.csv/*/retrieval_metrics.csv")))
    assert set(retrieval["split_seed"]) == {5}


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
