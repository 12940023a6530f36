"""`kedro run --pipelines finetuning --params training.ddp.world_size=2,...` on the tiny sample."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TINY_LOCAL_PARAMETERS, kedro_cli, latest, make_project_copy


def test_kedro_run_finetuning_with_two_ddp_processes(tmp_path: Path, tiny_sample: Path) -> None:
    project = make_project_copy(tmp_path / "project", tiny_sample,
                                {"parameters.yml": TINY_LOCAL_PARAMETERS})
    de = kedro_cli(project, "run", "--pipelines", "data_engineering")
    assert de.returncode == 0, de.stderr[-3000:]
    run = kedro_cli(project, "run", "--pipelines", "finetuning",
                    "--params", "training.ddp.world_size=2,training.epochs=2")
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "DDP: world_size=2 backend=gloo" in log
    assert "[rank 0/2]" in log and "[rank 1/2]" in log  # one kedro run, two processes
    metrics = json.loads(latest(project, "08_reporting/finetuning_metrics.json").read_text())
    assert metrics["ddp_world_size"] == 2 and metrics["epoch"] in (1, 2)
    for name in ("finetuned_checkpoint", "baseline_checkpoint", "last_checkpoint"):
        assert (latest(project, f"06_models/{name}") / "model.safetensors").is_file()
