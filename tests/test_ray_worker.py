"""The Ray task of one variant, run in-process: joblib's "all cores" is the task's reservation."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from kedro.pipeline import Pipeline, node

from compcars_kedro.clustering.parallel import effective_n_jobs
from compcars_kedro.ray_worker import CPU_LIMIT_ENV, VariantSpec, run_variant, task_cpu_limit


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """run_variant configures the worker's logging (handlers on the root, levels): undo it."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {n: logging.getLogger(n).level
              for n in ("compcars_kedro", "kedro", "kedro.io.data_catalog")}
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
        h.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_task_cpu_limit_caps_all_cores_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_LIMIT_ENV, raising=False)
    with task_cpu_limit(1):
        assert os.environ[CPU_LIMIT_ENV] == "1"
        assert joblib.effective_n_jobs(-1) == 1 and effective_n_jobs(-1) == 1
    assert CPU_LIMIT_ENV not in os.environ  # Ray reuses workers: nothing leaks to the next task
    with task_cpu_limit(0.5) as limit:  # a fractional reservation still gets one core
        assert limit == 1
    with task_cpu_limit(None) as limit:  # outside Ray: nothing set
        assert limit is None and CPU_LIMIT_ENV not in os.environ
    monkeypatch.setenv(CPU_LIMIT_ENV, "2")
    with task_cpu_limit(8) as limit:  # a lower limit already set is kept
        assert limit == 2
    with task_cpu_limit(1) as limit:
        assert limit == 1
    assert os.environ[CPU_LIMIT_ENV] == "2"


def _cores_seen(x: int) -> dict:
    return {"env": os.environ.get(CPU_LIMIT_ENV), "n_jobs": effective_n_jobs(-1), "x": x}


def test_run_variant_runs_the_chain_under_the_task_reservation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_logging: None) -> None:
    from kedro.io import MemoryDataset

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CPU_LIMIT_ENV, raising=False)
    chain = Pipeline([node(_cores_seen, "v.x", "v.seen", name="v.cores")])
    spec = VariantSpec(name="v", pipeline=chain, datasets={"v.x": MemoryDataset(3)}, values={},
                       return_names=["v.seen"], cwd=str(tmp_path), run_id=None, mlflow=None,
                       keys=None, study="grid", log_dir=str(tmp_path / "logs"), device="cpu",
                       num_cpus=1)
    result = run_variant(spec)
    assert result["status"] == "ok"
    assert result["outputs"]["v.seen"] == {"env": "1", "n_jobs": 1, "x": 3}
    assert CPU_LIMIT_ENV not in os.environ
    assert (tmp_path / "logs" / "ray-v.log").exists()
