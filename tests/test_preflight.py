"""Missing upstream data is explained before any node runs (compcars_kedro.preflight)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.io import DataCatalog

from compcars_kedro.pipelines.finetuning.pipeline import create_pipeline as finetuning
from compcars_kedro.preflight import check_upstream_data, missing_upstream_data


def _catalog(tmp_path: Path, raw: Path) -> DataCatalog:
    return DataCatalog.from_config({
        "compcars_raw": {"type": "compcars_kedro.datasets.RawImagesDataset", "path": str(raw)},
        "crops": {"type": "compcars_kedro.datasets.CropsStoreDataset",
                  "path": str(tmp_path / "crops"), "versioned": True},
        "multiview_samples": {"type": "pandas.ParquetDataset", "versioned": True,
                              "filepath": str(tmp_path / "multiview_samples.parquet")},
        "clip_layers_table": {"type": "compcars_kedro.datasets.OptionalCSVDataset",
                              "filepath": str(tmp_path / "clip_layers.csv")},
    })


def test_missing_inputs_name_the_pipeline_to_run_first(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, tmp_path / "no_raw")
    problems = missing_upstream_data(finetuning(), catalog)
    assert problems == [
        "  crops: never produced; run `kedro run --pipelines data_engineering` first (same --env)",
        "  multiview_samples: never produced; run `kedro run --pipelines data_engineering` "
        "first (same --env)"]
    with pytest.raises(RuntimeError, match="needs data that does not exist yet"):
        check_upstream_data(finetuning(), catalog)


def test_raw_data_and_optional_inputs(tmp_path: Path) -> None:
    from compcars_kedro.pipelines.data_engineering.pipeline import create_pipeline

    problems = missing_upstream_data(create_pipeline(), _catalog(tmp_path, tmp_path / "no_raw"))
    assert len(problems) == 1 and "compcars_raw: the raw data folder" in problems[0]
    assert "raw_path" in problems[0] and "make sample" in problems[0]
    (tmp_path / "raw").mkdir()
    assert missing_upstream_data(create_pipeline(), _catalog(tmp_path, tmp_path / "raw")) == []
