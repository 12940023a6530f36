"""data_engineering through a real Kedro runner, and end to end through the `kedro` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset, Version
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import ParquetDataset

from compcars_kedro.data.raw import detect_source
from compcars_kedro.datasets import CropsStoreDataset
from compcars_kedro.pipelines.data_engineering import create_pipeline
from compcars_kedro.pipelines.data_engineering.nodes import (
    parse_raw,
    validate_images,
)
from tests.conftest import kedro_cli

PARAMS = {"min_images_per_class_per_view": 3, "num_workers": 1,
          "crop": {"size": 24, "num_workers": 1}}


def test_sliced_pipeline_from_split_runs_in_sequential_runner(tiny_sample: Path,
                                                              tmp_path: Path) -> None:
    raw = detect_source(tiny_sample)
    valid, _, hashes = validate_images(parse_raw(raw), raw, PARAMS)
    pipe = create_pipeline().from_nodes("split_dataset")
    assert {n.name for n in pipe.nodes} == {"split_dataset", "crop_images"}
    catalog = DataCatalog({
        "validated_images": MemoryDataset(valid),
        "image_hashes": MemoryDataset(hashes),
        "compcars_raw": MemoryDataset(raw, copy_mode="assign"),
        "params:data_engineering": MemoryDataset(PARAMS),
        "image_splits": ParquetDataset(filepath=str(tmp_path / "splits.parquet"),
                                       version=Version(None, None)),
        "crops": CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None)),
    })
    SequentialRunner().run(pipe, catalog)
    crops = CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None)).load()
    images = pd.read_parquet(next(tmp_path.glob("splits.parquet/*/splits.parquet")))
    assert isinstance(crops.images, np.memmap)  # training reads the store through memmap
    assert list(crops.index["image_id"]) == list(images["image_id"])
    assert crops.images.shape == (len(images), 24, 24, 3)
    assert set(crops.index["split"]) == {"train", "val", "test", "unseen"}


@pytest.mark.slow
def test_kedro_run_data_engineering_end_to_end(project_copy: Path, tiny_sample: Path) -> None:
    params = "data_engineering.min_images_per_class_per_view=3,data_engineering.crop.size=24"
    result = kedro_cli(project_copy, "run", "--pipelines", "data_engineering", "--params", params)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = project_copy / "data"
    # every output is versioned: <path>/<timestamp>/<name>
    for rel in ("02_intermediate/manifest.parquet", "02_intermediate/rejected_images.csv",
                "03_primary/validated_images.parquet", "05_model_input/image_splits.parquet",
                "05_model_input/multiview_samples.parquet", "05_model_input/crops"):
        versions = list((data / rel).iterdir())
        assert len(versions) == 1 and (versions[0] / Path(rel).name).exists(), rel
    rejected = pd.read_csv(next((data / "02_intermediate/rejected_images.csv").glob("*/*")))
    info = json.loads((tiny_sample / "sample_info.json").read_text())
    expected = {p["path"]: p["expected_reason"] for p in info["planted"] if p["expected_reason"]}
    got = dict(zip(rejected["path"], rejected["reason"], strict=True))
    assert {k: got.get(k) for k in expected} == expected
    # the nested override kept its sibling keys (soft merge): margin/resize_mode still defaults
    meta = json.loads(next((data / "05_model_input/crops").glob("*/crops/meta.json")).read_text())
    assert meta["crop"]["size"] == 24 and meta["crop"]["resize_mode"] == "pad"
    assert meta["crop"]["margin"] == 0.05
