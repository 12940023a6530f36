"""MLflow: one FINISHED run per `kedro run`, params/metrics read back and equal to the outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.tracking import clustering_mlflow_metrics, training_metrics
from tests.conftest import latest


def test_training_metrics_are_stepped_per_epoch_and_skip_nan() -> None:
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.9, 0.5],
                            "accuracy": [float("nan")] * 2})
    out = training_metrics(history, {"mean_average_precision_at_r": 0.4, "variant": "x"})
    assert out["epoch.train_loss"] == [{"value": 0.9, "step": 1}, {"value": 0.5, "step": 2}]
    assert "epoch.accuracy" not in out and "best.variant" not in out
    assert out["best.mean_average_precision_at_r"] == {"value": 0.4, "step": 0}


def test_clustering_keys_are_namespaced() -> None:
    table = pd.DataFrame([{"source": "finetuned", "models": "unseen", "selection_mode": "transfer",
                           "reducer": "pca", "clusterer": "hdbscan", "ari": 0.5, "ami": 0.6,
                           "nmi": 0.7, "purity": 0.8, "noise_fraction": 0.1, "n_clusters": 4}])
    out = clustering_mlflow_metrics(table)
    assert out["finetuned.unseen.transfer.pca.hdbscan.ari"]["value"] == 0.5


@pytest.mark.slow
def test_kedro_run_is_one_finished_mlflow_run_matching_outputs(tiny_run) -> None:
    import mlflow
    from mlflow import MlflowClient

    project, result = tiny_run
    assert result.returncode == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{project / '.mlflow' / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    # flattened params equal the run's parameters (conf/base soft-merged with conf/local)
    assert run.data.params["training.epochs"] == "2"
    assert run.data.params["model"] == "resnet18"
    assert run.data.params["data_engineering.crop.size"] == "32"
    # final metrics equal the versioned outputs of the same run
    best = json.loads(latest(project, "08_reporting/finetuning_metrics.json").read_text())
    key = "finetuning.best.train_loss"
    assert run.data.metrics[key] == pytest.approx(best["train_loss"])
    history = client.get_metric_history(run.info.run_id, "finetuning.epoch.train_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
    retrieval = pd.read_csv(latest(project, "08_reporting/retrieval_metrics.csv"))
    row = retrieval.loc[(retrieval["source"] == "finetuned") & (retrieval["split"] == "unseen")].iloc[0]
    assert run.data.metrics["retrieval.finetuned.unseen.precision_at_1"] == pytest.approx(
        row["precision_at_1"])
    clustering = pd.read_csv(latest(project, "08_reporting/clustering_metrics.csv"))
    crow = clustering.iloc[0]
    ckey = (f"clustering.{crow['source']}.{crow['models']}.{crow['selection_mode']}."
            f"{crow['reducer']}.{crow['clusterer']}.ari")
    assert run.data.metrics[ckey] == pytest.approx(crow["ari"])
    # artifacts: tables and the best checkpoint
    tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert {"tables/clustering_metrics.csv", "tables/training_history.csv"} <= tables
    ckpt = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint/finetuned_checkpoint")}
    assert "checkpoint/finetuned_checkpoint/model.safetensors" in ckpt
    # the model loads back with MLflow and embeds like the checkpoint it came from
    from compcars_kedro.training.checkpoint import load_checkpoint
    from compcars_kedro.training.inference import model_from_checkpoint

    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    images = np.random.default_rng(0).integers(0, 255, size=(3, 2, 32, 32, 3), dtype=np.uint8)
    got = pyfunc.predict(images)
    import torch

    from compcars_kedro.training.augment import prepare_images
    model = model_from_checkpoint(load_checkpoint(latest(project, "06_models/finetuned_checkpoint")))
    with torch.no_grad():
        want = torch.nn.functional.normalize(
            model.embed(prepare_images(torch.from_numpy(images), image_size=32)), dim=-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
