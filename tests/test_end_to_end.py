"""The default `kedro run` on a tiny sample: every stage, versioned outputs, honest tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import latest

pytestmark = pytest.mark.slow


def test_default_run_succeeds(tiny_run) -> None:
    _, result = tiny_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_default_run_writes_every_stage(tiny_run) -> None:
    project, result = tiny_run
    assert result.returncode == 0
    for rel in ("02_intermediate/rejected_images.csv", "05_model_input/crops",
                "06_models/finetuned_checkpoint", "06_models/baseline_checkpoint",
                "08_reporting/training_history.csv",
                "07_model_output/embeddings/finetuned_unseen",
                "08_reporting/retrieval_metrics.csv", "08_reporting/clustering_metrics.csv"):
        assert latest(project, rel).exists(), rel
    ckpt = latest(project, "06_models/finetuned_checkpoint")
    assert (ckpt / "model.safetensors").exists() and (ckpt / "meta.json").exists()
    meta = json.loads((ckpt / "meta.json").read_text())["meta"]
    assert meta["model_config"]["views"] == ["front", "rear"]
    # trained on one consistent data version, recorded for the embeddings check
    crops_meta = json.loads((latest(project, "05_model_input/crops") / "meta.json").read_text())
    assert meta["data_fingerprints"]["split_fingerprint"] == crops_meta["split_fingerprint"]


def test_metrics_tables_cover_baseline_finetuned_seen_unseen(tiny_run) -> None:
    project, _ = tiny_run
    clustering = pd.read_csv(latest(project, "08_reporting/clustering_metrics.csv"))
    combos = set(zip(clustering["source"], clustering["models"], strict=True))
    assert combos == {(s, m) for s in ("baseline", "finetuned") for m in ("seen", "unseen")}
    # kmeans with the true k is a labelled reference, not a selection mode
    assert set(clustering["selection_mode"]) == {"internal", "transfer", "reference"}
    assert "oracle" not in set(clustering["selection_mode"])
    matched = pd.read_csv(latest(project, "08_reporting/matched_metrics.csv"))
    assert {"source", "split", "draw", "n_classes", "n_samples", "kind"} <= set(matched.columns)
    if len(matched):  # the tiny sample may have too few test classes of 2+ samples to match
        sizes = matched.loc[matched["kind"] == "retrieval"].pivot_table(
            index=["source", "draw"], columns="split", values=["n_classes", "n_samples"])
        assert (sizes[("n_samples", "test")] == sizes[("n_samples", "unseen")]).all()
    retrieval = pd.read_csv(latest(project, "08_reporting/retrieval_metrics.csv"))
    assert set(retrieval["split"]) == {"val", "test", "unseen"}
    assert {"model", "loss", "views", "seed"} <= set(retrieval.columns)


def test_no_image_twice_in_any_evaluation_set(tiny_run) -> None:
    """val / test / unseen of every views setting, rebuilt from the run's saved split tables,
    and the saved embedding tables themselves: no image id appears twice."""
    from kedro.io import Version

    from compcars_kedro.data.views import sample_table
    from compcars_kedro.datasets import CropsStoreDataset

    project, result = tiny_run
    assert result.returncode == 0
    splits = pd.read_parquet(latest(project, "05_model_input/image_splits.parquet"))
    pairs = pd.read_parquet(latest(project, "05_model_input/multiview_samples.parquet"))
    crops = CropsStoreDataset(path=str(project / "data/05_model_input/crops"),
                              version=Version(None, None)).load()
    assert set(crops.index["image_id"]) == set(splits["image_id"])
    for views in (["front"], ["rear"], ["front", "rear"]):
        for split in ("val", "test", "unseen"):
            table = sample_table(crops, pairs, views, split)
            assert len(table), (views, split)
            ids = pd.concat([table[f"{v}_image_id"] for v in views])
            assert ids.is_unique, (views, split, ids[ids.duplicated()].tolist()[:3])
    for source in ("baseline", "finetuned"):
        for split in ("val", "test", "unseen"):
            index = pd.read_parquet(latest(project, f"07_model_output/embeddings/{source}_{split}")
                                    / "index.parquet")
            ids = pd.concat([index["front_image_id"], index["rear_image_id"]])
            assert ids.is_unique, (source, split)
    summary = json.loads(latest(project, "05_model_input/split_summary.json").read_text())
    assert summary["near_duplicate_groups"]["groups"] >= 1
    assert sum(summary["unpaired_per_split"]["unseen"].values()) + \
        2 * summary["pairs_per_split"]["unseen"] == summary["images_per_split"]["unseen"]
