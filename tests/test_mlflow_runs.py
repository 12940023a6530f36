"""MLflow runs: named by pipeline and variant, tagged, stale RUNNING runs closed, no FAILED run
from a parameter typo (hook order around kedro-mlflow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from compcars_kedro.mlflow_runs import (
    CloseStaleRunsHook,
    NameRunHook,
    close_stale_runs,
    process_tags,
    run_keys,
    run_name,
    run_tags,
)
from tests.conftest import kedro_cli


def test_names_and_tags_tell_variants_apart() -> None:
    keys = {"model": "resnet50", "loss": "arcface", "views": "front+rear", "seed": 0}
    assert run_name("finetuning", keys) == "finetuning resnet50-arcface-front+rear s0"
    assert run_name("data_engineering", None) == "data_engineering"
    assert run_name("grid", {**keys, "split_seed": 7}) == "grid resnet50-arcface-front+rear s0 ss7"
    clip = {**keys, "model": "clip", "loss": "clip", "component": "text", "trainable_layers": 6}
    assert run_name("clip_layers", clip).endswith("s0 component=text trainable_layers=6")
    tags = run_tags("finetuning", keys, "compcars")
    assert tags == {"pipeline": "finetuning", "env": "compcars", "model": "resnet50",
                    "loss": "arcface", "views": "front+rear", "seed": "0"}


def test_run_keys_come_from_the_parameters_of_a_training_run() -> None:
    pipe = Pipeline([node(lambda m, loss, v: None, ["params:model", "params:loss", "params:views"],
                          None, name="resolve")])
    catalog = DataCatalog({"parameters": MemoryDataset(
        {"model": "vitb32", "loss": "ntxent", "views": "front", "training": {"seed": 3}})})
    assert run_keys(pipe, catalog) == {"model": "vitb32", "loss": "ntxent", "views": "front",
                                       "seed": 3}
    other = Pipeline([node(lambda x: x, "a", "b", name="n")])
    assert run_keys(other, catalog) is None


def test_validation_runs_before_and_naming_after_kedro_mlflow_opens_the_run() -> None:
    from kedro.framework.hooks.manager import (
        _create_hook_manager,
        _register_hooks,
        _register_hooks_entry_points,
    )

    from compcars_kedro import settings

    manager = _create_hook_manager()
    _register_hooks(manager, settings.HOOKS)
    _register_hooks_entry_points(manager, ())
    impls = manager.hook.before_pipeline_run.get_hookimpls()
    # pluggy calls the list from its end
    order = [type(i.plugin).__name__ for i in reversed(impls)]
    assert "MlflowHook" in order
    mlflow_at = order.index("MlflowHook")
    assert order.index("ValidateParametersHook") < mlflow_at
    assert order.index("CloseStaleRunsHook") < mlflow_at
    assert order.index("NameRunHook") > mlflow_at
    assert isinstance(settings.HOOKS[-1], NameRunHook | CloseStaleRunsHook)


def test_runs_of_dead_processes_are_closed_as_killed(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    alive = process_tags()
    gone = {**alive, "compcars.pid": dead.stdout.strip()}
    gone.pop("compcars.process_started", None)
    reused = {**alive, "compcars.process_started": "12.00"}  # our pid, another start time
    other_host = {**gone, "compcars.host": "elsewhere"}
    runs = {name: client.create_run(exp, tags=tags, run_name=name).info.run_id
            for name, tags in [("killed", gone), ("live", alive), ("reused", reused),
                               ("remote", other_host), ("untagged", {})]}
    closed = close_stale_runs(client)
    assert set(closed) == {runs["killed"], runs["reused"]}
    status = {name: client.get_run(rid).info.status for name, rid in runs.items()}
    assert status == {"killed": "KILLED", "live": "RUNNING", "reused": "KILLED",
                      "remote": "RUNNING", "untagged": "RUNNING"}
    assert "was gone" in client.get_run(runs["killed"]).data.tags["compcars.closed_because"]
    assert close_stale_runs(client) == []  # idempotent


@pytest.mark.slow
def test_parameter_typo_leaves_no_mlflow_run(project_copy: Path) -> None:
    from mlflow import MlflowClient

    result = kedro_cli(project_copy, "run", "--pipelines", "finetuning",
                       "--params", "model=vgg16")
    assert result.returncode != 0
    assert "vgg16" in result.stdout + result.stderr
    db = project_copy / ".mlflow" / "mlflow.db"
    if db.exists():  # kedro-mlflow may have created the store: it must hold no run
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        ids = [e.experiment_id for e in client.search_experiments()]
        assert not ids or client.search_runs(ids) == []


@pytest.mark.slow
def test_default_run_is_named_and_tagged(tiny_run) -> None:
    from mlflow import MlflowClient

    project, result = tiny_run
    assert result.returncode == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{project / '.mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name == "default resnet18-ce-front+rear s42"
    tags = run.data.tags
    assert {k: tags[k] for k in ("model", "loss", "views", "seed", "env", "pipeline")} == {
        "model": "resnet18", "loss": "ce", "views": "front+rear", "seed": "42", "env": "local",
        "pipeline": "default"}
    assert tags["compcars.pid"] != str(os.getpid())
