"""``GPURunner``: a sequential Kedro runner that places ``gpu``-tagged nodes on the accelerator.

    kedro run --runner compcars_kedro.runner.GPURunner
    kedro run --runner compcars_kedro.runner.GPURunner --runner-params device=cuda:1,require_gpu=true

* nodes tagged ``gpu`` run with the selected device (``device`` runner param, else
  ``$COMPCARS_DEVICE``, else ``cuda`` when available, else ``cpu``), exposed to the node through
  :func:`compcars_kedro.device.current_device`;
* for each GPU node it logs the device, the wall time and the peak GPU memory, and frees cached
  GPU memory afterwards;
* with ``require_gpu`` (or ``$COMPCARS_REQUIRE_GPU=1``) it refuses, before any node runs, to run
  a GPU node on CPU;
* every other node runs as in ``SequentialRunner``.

The per-node work is a Kedro hook, :class:`GPUNodeHook` (``before_node_run`` /
``after_node_run`` / ``on_node_error``), as Kedro's own runners do it: the runner registers it on
the run's hook manager for the duration of its run (a fresh manager when it was given none), so
the nodes and the pipeline are the ones the caller passed, unwrapped.

Models never travel through deep-copying ``MemoryDataset``s: GPU nodes exchange checkpoints
(safetensors) and arrays through versioned catalog datasets.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from typing import Any

import torch
from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager, _NullPluginManager
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import SequentialRunner

from compcars_kedro.device import select_device, use_device

logger = logging.getLogger(__name__)

REQUIRE_GPU_ENV = "COMPCARS_REQUIRE_GPU"
_TRUE = {"1", "true", "yes", "on"}


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE


class GPUNodeHook:
    """Device and accounting of the ``gpu``-tagged nodes of one run.

    ``before_node_run`` enters :func:`~compcars_kedro.device.use_device` (kept open in an
    ``ExitStack`` until the node ends: Kedro calls the node between the two hooks, in the same
    thread, so the node sees the device), resets the peak-memory counter and starts the clock;
    ``after_node_run`` / ``on_node_error`` stop it (after a CUDA synchronize on success), record
    and log the node's stats, leave the device context and free cached GPU memory.
    ``trylast`` / ``tryfirst``: the clock runs as close around the node call as the other hooks
    (e.g. kedro-mlflow logging the node's parameters) allow.
    """

    def __init__(self, device: torch.device, gpu_tag: str, stats: dict[str, dict[str, Any]]):
        self.device = device
        self.gpu_tag = gpu_tag
        self.stats = stats
        self._open: dict[str, tuple[contextlib.ExitStack, float]] = {}

    @hook_impl(trylast=True)
    def before_node_run(self, node: Node) -> None:
        if self.gpu_tag not in node.tags:
            return
        stack = contextlib.ExitStack()
        stack.enter_context(use_device(self.device))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._open[node.name] = (stack, time.perf_counter())

    @hook_impl(tryfirst=True)
    def after_node_run(self, node: Node) -> None:
        if node.name in self._open and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._finish(node.name)

    @hook_impl(tryfirst=True)
    def on_node_error(self, node: Node) -> None:
        self._finish(node.name)

    def close(self) -> None:
        """Leave the device context of a node whose end no hook saw (another hook failed)."""
        for name in list(self._open):
            self._finish(name)

    def _finish(self, name: str) -> None:
        opened = self._open.pop(name, None)
        if opened is None:
            return
        stack, start = opened
        cuda = self.device.type == "cuda"
        wall = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else 0.0
        self.stats[name] = {"device": str(self.device), "wall_s": wall, "peak_mem_mib": peak}
        logger.info("GPU node %s on %s: %.2f s wall, peak GPU memory %.0f MiB",
                    name, self.device, wall, peak)
        stack.close()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


class GPURunner(SequentialRunner):
    """Sequential runner with device placement and accounting for ``gpu``-tagged nodes."""

    def __init__(self, is_async: bool = False, device: str | None = None,
                 require_gpu: bool | str | None = None, gpu_tag: str = "gpu") -> None:
        super().__init__(is_async=is_async)
        self.device_name = device
        env_require = os.environ.get(REQUIRE_GPU_ENV)
        self.require_gpu = _as_bool(require_gpu if require_gpu is not None else env_require or False)
        self.gpu_tag = gpu_tag
        self.node_stats: dict[str, dict[str, Any]] = {}

    def _run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None,
             run_id: str | None = None) -> None:
        gpu_nodes = [n for n in pipeline.nodes if self.gpu_tag in n.tags]
        if not gpu_nodes:
            super()._run(pipeline, catalog, hook_manager, run_id)
            return
        device = select_device(self.device_name)
        if self.require_gpu and device.type != "cuda":
            names = ", ".join(n.name for n in gpu_nodes)
            raise RuntimeError(
                f"require_gpu is set but the GPU nodes ({names}) would run on {device}; "
                "run on a CUDA machine or drop require_gpu / $COMPCARS_REQUIRE_GPU")
        logger.info("GPURunner: %d gpu-tagged node(s) on %s", len(gpu_nodes), device)
        if hook_manager is None or isinstance(hook_manager, _NullPluginManager):
            hook_manager = _create_hook_manager()  # a null manager would never call the hook
        hook = GPUNodeHook(device, self.gpu_tag, self.node_stats)
        hook_manager.register(hook)
        try:
            super()._run(pipeline, catalog, hook_manager, run_id)
        finally:
            hook_manager.unregister(hook)
            hook.close()
