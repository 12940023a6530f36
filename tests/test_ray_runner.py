"""RayRunner: grid variants as Ray tasks on an embedded local Ray (2 CPUs, 127.0.0.1 only)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kedro.pipeline import Pipeline, node, pipeline
from kedro.runner import SequentialRunner

from compcars_kedro.grid import Variant
from compcars_kedro.pipelines.grid.pipeline import study_pipeline
from compcars_kedro.ray_runner import RayRunner
from tests.conftest import ROOT, kedro_cli, make_project_copy
from tests.pipelines.grid.test_grid import make_grid_catalog


def test_runner_params_are_checked() -> None:
    assert RayRunner(num_gpus="1", num_cpus=2).num_gpus == 1
    with pytest.raises(ValueError, match="num_cpus"):
        RayRunner(num_cpus="many")


def _newest(root: Path, pattern: str) -> pd.DataFrame:
    return pd.read_csv(sorted(root.glob(pattern))[-1])


@pytest.mark.slow
def test_ray_grid_matches_sequential_and_isolates_failures(tmp_path: Path, tiny_crops,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    ok = [Variant("resnet18", "multisimilarity", "front+rear", 0),
          Variant("resnet18", "ce", "front+rear", 0)]
    bad = Variant("resnet18", "multisimilarity", "front+rear", 1,
                  overrides={"training": {"grad_clip": -1.0}})  # fails in its first node

    seq_root, ray_root = tmp_path / "sequential", tmp_path / "ray"
    seq_root.mkdir()
    ray_root.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each Ray task gets OMP_NUM_THREADS=num_cpus=1: same arithmetic
    try:
        monkeypatch.chdir(seq_root)
        SequentialRunner().run(study_pipeline(ok, "grid"), make_grid_catalog(tiny_crops))
    finally:
        torch.set_num_threads(threads)

    def crash(x: object) -> None:  # a task that dies outside the grid's guards
        import os

        os._exit(3)

    dying = pipeline(Pipeline([node(crash, "crops", "nothing", name="crash")]),
                     namespace="zz_dies", inputs={"crops"})
    monkeypatch.chdir(ray_root)
    runner = RayRunner(cluster_cpus=2, num_cpus=1)
    runner.run(study_pipeline([*ok, bad], "grid") + dying, make_grid_catalog(tiny_crops))

    # every variant ran as its own task; the broken ones did not stop the others
    assert {k: v["status"] for k, v in runner.results.items()} == {
        ok[0].name: "ok", ok[1].name: "ok", bad.name: "failed", "zz_dies": "failed"}
    assert "grad_clip" in runner.results[bad.name]["error"]
    assert "WorkerCrashedError" in runner.results["zz_dies"]["error"]
    status = _newest(ray_root, "data/08_reporting/grid/status.csv/*/status.csv").set_index("variant")
    assert status.loc[ok[0].name, "status"] == "ok" and status.loc[bad.name, "status"] == "failed"
    # the same metrics as the sequential grid, variant by variant
    for table, keys in (("retrieval_metrics", ["variant", "source", "split"]),
                        ("clustering_metrics", ["variant", "source", "models", "selection_mode",
                                                "reducer", "clusterer"])):
        pattern = f"data/08_reporting/grid/{table}.csv/*/{table}.csv"
        seq = _newest(seq_root, pattern).sort_values(keys).reset_index(drop=True)
        par = _newest(ray_root, pattern).sort_values(keys).reset_index(drop=True)
        assert set(par["variant"]) == {v.name for v in ok}
        metrics = [c for c in ("precision_at_1", "mean_average_precision_at_r", "ari", "ami")
                   if c in seq]
        assert metrics
        pd.testing.assert_frame_equal(seq[keys + metrics], par[keys + metrics], rtol=1e-5)
    # each variant keeps its own versioned outputs
    assert (ray_root / "data/06_models/grid" / ok[1].name / "finetuned_checkpoint").is_dir()


#: conf/local/parameters_grid.yml of the CLI test: 2 variants.
TWO_VARIANTS = """
grid:
  models: [resnet18]
  losses: [ce, multisimilarity]
  views: [front+rear]
  seeds: [0]
  split_seeds: [42]
"""


@pytest.mark.slow
def test_kedro_run_grid_on_ray_nests_one_mlflow_run_per_variant(tmp_path: Path,
                                                                tiny_sample: Path) -> None:
    from mlflow import MlflowClient

    from tests.conftest import TINY_LOCAL_PARAMETERS

    project = make_project_copy(tmp_path / "project", tiny_sample,
                                {"parameters.yml": TINY_LOCAL_PARAMETERS,
                                 "parameters_grid.yml": TWO_VARIANTS})
    (project / "conf" / "logging.yml").write_text((ROOT / "conf" / "logging.yml").read_text())
    de = kedro_cli(project, "run", "--pipelines", "data_engineering")
    assert de.returncode == 0, de.stderr[-3000:]
    result = kedro_cli(project, "run", "--pipelines", "grid", "--runner",
                       "compcars_kedro.runner.RayRunner", "--runner-params", "cluster_cpus=2",
                       "--params", "training.epochs=1")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "2 variant(s) as Ray tasks" in out
    status = _newest(project, "data/08_reporting/grid/status.csv/*/status.csv")
    assert sorted(status["status"]) == ["ok", "ok"]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / '.mlflow' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_name = {r.info.run_name: r for r in runs}
    parent = by_name.pop("grid (2 variants)")
    assert sorted(by_name) == ["data_engineering", "grid resnet18-ce-front+rear s0 ss42",
                               "grid resnet18-multisimilarity-front+rear s0 ss42"]
    for name, run in by_name.items():
        assert run.info.status == "FINISHED", name
        if name.startswith("grid "):
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.data.tags["model"] == "resnet18" and run.data.tags["seed"] == "0"
            assert run.data.tags["env"] == "local"
            variant = run.data.tags["variant"]
            tables = {a.path for a in client.list_artifacts(run.info.run_id, f"{variant}/tables")}
            assert f"{variant}/tables/retrieval_metrics" in tables
            assert (project / "logs" / f"ray-{variant}.log").exists()
            assert any(k.startswith("retrieval.finetuned.unseen") for k in run.data.metrics)
            assert run.data.params["loss"] in {"ce", "multisimilarity"}
