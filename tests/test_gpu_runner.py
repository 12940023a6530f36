"""GPURunner on a CPU machine: tags respected, device exposed to nodes (through a hook, the nodes
unwrapped), require_gpu refusal."""

from __future__ import annotations

import logging

import pytest
import torch
from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from compcars_kedro.device import current_device
from compcars_kedro.gpu_runner import GPURunner


def _device_name(x: int) -> str:
    return f"{x}:{current_device().type}"


def _plain(x: int) -> int:
    return x + 1


def _pipeline() -> Pipeline:
    return Pipeline([
        node(_plain, "a", "b", name="cpu_node"),
        node(_device_name, "b", "c", name="gpu_node", tags=["gpu"]),
    ])


def test_gpu_node_runs_on_selected_device_and_is_accounted(caplog: pytest.LogCaptureFixture) -> None:
    runner = GPURunner(device="cpu")
    catalog = DataCatalog({"a": MemoryDataset(1), "c": MemoryDataset()})
    with caplog.at_level(logging.INFO, logger="compcars_kedro.gpu_runner"):
        runner.run(_pipeline(), catalog)
    assert catalog.load("c") == "2:cpu"
    assert set(runner.node_stats) == {"gpu_node"}  # CPU-only nodes are left alone
    assert runner.node_stats["gpu_node"]["device"] == "cpu"
    assert runner.node_stats["gpu_node"]["wall_s"] >= 0
    assert any("GPU node gpu_node on cpu" in r.message for r in caplog.records)


def test_require_gpu_refuses_before_running_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls: list[int] = []
    pipe = Pipeline([node(lambda x: calls.append(x) or x, "a", "b", name="first"),
                     node(_device_name, "b", "c", name="train", tags=["gpu"])])
    catalog = DataCatalog({"a": MemoryDataset(1)})
    with pytest.raises(RuntimeError, match="require_gpu.*train"):
        GPURunner(require_gpu="true").run(pipe, catalog)
    assert calls == []  # refused up front, not halfway through the pipeline


def test_require_gpu_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COMPCARS_REQUIRE_GPU", "1")
    with pytest.raises(RuntimeError, match="require_gpu"):
        GPURunner().run(_pipeline(), DataCatalog({"a": MemoryDataset(1)}))


def test_pipeline_without_gpu_nodes_ignores_require_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    catalog = DataCatalog({"a": MemoryDataset(1), "b": MemoryDataset()})
    GPURunner(require_gpu=True).run(Pipeline([node(_plain, "a", "b", name="cpu_node")]), catalog)
    assert catalog.load("b") == 2


def test_cuda_device_request_without_cuda_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="device=cpu"):
        GPURunner(device="cuda").run(_pipeline(), DataCatalog({"a": MemoryDataset(1)}))


def test_current_device_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPCARS_DEVICE", "cpu")
    assert current_device() == torch.device("cpu")


def _fails(x: int) -> int:
    raise ValueError(f"boom on {current_device().type}")


class _Seen:
    """A project hook: which function each node runs, and the device it sees around the node."""

    def __init__(self) -> None:
        self.funcs: dict[str, object] = {}

    @hook_impl
    def before_node_run(self, node: object) -> None:
        self.funcs[node.name] = node.func  # type: ignore[attr-defined]


def test_device_comes_from_a_hook_on_the_callers_manager_and_nodes_are_not_wrapped() -> None:
    manager = _create_hook_manager()
    seen = _Seen()
    manager.register(seen)
    plugins = set(manager.get_plugins())
    catalog = DataCatalog({"a": MemoryDataset(1), "c": MemoryDataset()})
    runner = GPURunner(device="cpu")
    runner.run(_pipeline(), catalog, hook_manager=manager)
    assert catalog.load("c") == "2:cpu"
    assert seen.funcs == {"cpu_node": _plain, "gpu_node": _device_name}  # the original functions
    assert set(runner.node_stats) == {"gpu_node"}
    assert set(manager.get_plugins()) == plugins  # the runner's hook is gone after the run


def test_failing_gpu_node_is_accounted_and_leaves_no_device_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPCARS_DEVICE", "cpu")
    from compcars_kedro import device as device_module

    pipe = Pipeline([node(_fails, "a", "b", name="broken", tags=["gpu"])])
    runner = GPURunner(device="cpu")
    with pytest.raises(ValueError, match="boom on cpu"):
        runner.run(pipe, DataCatalog({"a": MemoryDataset(1)}))
    assert runner.node_stats["broken"]["device"] == "cpu"  # on_node_error recorded it
    assert device_module._current.get() is None  # the device context was left


def test_cuda_accounting_around_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch without a GPU: counters reset before the node, synchronize after it,
    peak memory recorded, cache emptied; the node sees the cuda device."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))

    def on_gpu(x: int) -> str:
        calls.append("node")
        return current_device().type

    runner = GPURunner(device="cuda", require_gpu=True)
    catalog = DataCatalog({"a": MemoryDataset(1), "b": MemoryDataset()})
    runner.run(Pipeline([node(on_gpu, "a", "b", name="train", tags=["gpu"])]), catalog)
    assert catalog.load("b") == "cuda"
    assert calls == ["reset", "node", "sync", "empty"]
    stats = runner.node_stats["train"]
    assert stats["device"] == "cuda" and stats["peak_mem_mib"] == 3.0 and stats["wall_s"] >= 0
