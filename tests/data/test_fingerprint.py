"""Versions that belong together: mixed data_engineering outputs (or a checkpoint trained on
other crops) are refused, naming the datasets and the command to rerun."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from compcars_kedro.data.fingerprint import (
    SOURCE_KEY,
    SPLIT_KEY,
    check_versions,
    fingerprints_of,
    table_fingerprint,
)
from compcars_kedro.data.raw import detect_source
from compcars_kedro.pipelines.data_engineering.nodes import (
    crop_images,
    parse_raw,
    split_dataset,
    validate_images,
)
from compcars_kedro.pipelines.embeddings.nodes import embed_splits
from compcars_kedro.pipelines.finetuning.nodes import finetune
from compcars_kedro.training.checkpoint import Checkpoint
from tests.bad_inputs import make_bad_manifest

PARAMS = {"min_images_per_class_per_view": 2, "unseen_fraction": 0.34, "num_workers": 1,
          "crop": {"size": 8, "num_workers": 1}}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory):
    """(crops, pairs) of seed 1 and the (splits, pairs) of seed 2 on the same validated images."""
    csv, _ = make_bad_manifest(tmp_path_factory.mktemp("fp"), [])
    raw = detect_source(csv)
    valid, _, _ = validate_images(parse_raw(raw, PARAMS), raw, PARAMS)
    splits1, pairs1, _, _ = split_dataset(valid, {**PARAMS, "seed": 1})
    splits2, pairs2, _, _ = split_dataset(valid, {**PARAMS, "seed": 2})
    assert not splits1.set_index("image_id")["split"].equals(
        splits2.set_index("image_id").loc[splits1["image_id"], "split"]), "seeds must differ"
    return valid, crop_images(splits1, raw, PARAMS), pairs1, splits2, pairs2


def test_fingerprints_travel_from_validated_to_crops(two_runs) -> None:
    valid, crops, pairs1, splits2, pairs2 = two_runs
    source = fingerprints_of(valid)[SOURCE_KEY]
    assert fingerprints_of(crops)[SOURCE_KEY] == source == fingerprints_of(pairs2)[SOURCE_KEY]
    assert fingerprints_of(crops)[SPLIT_KEY] == fingerprints_of(pairs1)[SPLIT_KEY]
    assert fingerprints_of(pairs2)[SPLIT_KEY] == fingerprints_of(splits2)[SPLIT_KEY]
    assert check_versions(crops=crops, multiview_samples=pairs1) == fingerprints_of(crops)


def test_table_fingerprint_ignores_row_order_but_not_content() -> None:
    df = pd.DataFrame({"a": ["x", "y"], "b": [1, 2]})
    assert table_fingerprint(df, ["a", "b"]) == table_fingerprint(df.iloc[::-1], ["a", "b"])
    assert table_fingerprint(df, ["a", "b"]) != table_fingerprint(df.assign(b=[2, 1]), ["a", "b"])


def test_mixed_versions_are_refused_by_finetuning(two_runs) -> None:
    _, crops, _, _, pairs2 = two_runs
    with pytest.raises(ValueError, match=r"split_fingerprint differs: crops=\w+, "
                                         r"multiview_samples=\w+.*kedro run --pipelines "
                                         r"data_engineering"):
        finetune(crops, pairs2, {"model": {}, "loss": {"name": "ce"}, "training": {}})


def test_checkpoint_of_other_crops_is_refused_by_embeddings(two_runs) -> None:
    _, crops, pairs1, _, pairs2 = two_runs
    stale = Checkpoint(model_state={}, meta={
        "stage": "finetuned", "data_fingerprints": fingerprints_of(pairs2)})
    with pytest.raises(ValueError, match=r"finetuned_checkpoint=.*kedro run --pipelines finetuning"):
        embed_splits(crops, pairs1, stale, {})
    with pytest.raises(ValueError, match=r"crops=.*multiview_samples=.*data_engineering"):
        embed_splits(crops, pairs2, stale, {})


def test_inputs_without_fingerprints_are_not_refused(two_runs, caplog) -> None:
    _, crops, pairs1, _, _ = two_runs
    legacy = pairs1.drop(columns=[SOURCE_KEY, SPLIT_KEY])
    assert check_versions(crops=crops, multiview_samples=legacy) == fingerprints_of(crops)
    assert "multiview_samples" in caplog.text


def test_crops_store_on_disk_keeps_its_fingerprints(two_runs, tmp_path: Path) -> None:
    from kedro.io import Version

    from compcars_kedro.datasets import CropsStoreDataset

    _, crops, _, _, _ = two_runs
    ds = CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None))
    ds.save(crops)
    loaded = CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None)).load()
    assert fingerprints_of(loaded) == fingerprints_of(crops)
