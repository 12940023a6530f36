"""The names ``kedro run --runner compcars_kedro.runner.<Name>`` resolves (as Kedro's CLI does)."""

from __future__ import annotations

from kedro.utils import load_obj

from compcars_kedro.gpu_runner import GPURunner
from compcars_kedro.ray_runner import RayRunner


def test_runner_names_resolve_as_the_cli_loads_them() -> None:
    assert load_obj("compcars_kedro.runner.GPURunner", "kedro.runner") is GPURunner
    assert load_obj("compcars_kedro.runner.RayRunner", "kedro.runner") is RayRunner
