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

Models never travel through deep-copying ``MemoryDataset``s: GPU nodes exchange checkpoints
(safetensors) and arrays through versioned catalog datasets.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from typing import Any

import torch
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import SequentialRunner

from compcars_kedro.device import select_device, use_device

logger = logging.getLogger(__name__)

REQUIRE_GPU_ENV = "COMPCARS_REQUIRE_GPU"
_TRUE = {"1", "true", "yes", "on"}


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE


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

    def run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None,
            run_id: str | None = None, only_missing_outputs: bool = False) -> dict[str, Any]:
        gpu_nodes = [n for n in pipeline.nodes if self.gpu_tag in n.tags]
        device = select_device(self.device_name) if gpu_nodes else torch.device("cpu")
        if gpu_nodes and self.require_gpu and device.type != "cuda":
            names = ", ".join(n.name for n in gpu_nodes)
            raise RuntimeError(
                f"require_gpu is set but the GPU nodes ({names}) would run on {device}; "
                "run on a CUDA machine or drop require_gpu / $COMPCARS_REQUIRE_GPU")
        if gpu_nodes:
            logger.info("GPURunner: %d gpu-tagged node(s) on %s", len(gpu_nodes), device)
        wrapped = Pipeline([self._wrap(n, device) if self.gpu_tag in n.tags else n
                            for n in pipeline.nodes])
        return super().run(wrapped, catalog, hook_manager=hook_manager, run_id=run_id,
                           only_missing_outputs=only_missing_outputs)

    def _wrap(self, node: Node, device: torch.device) -> Node:
        func = node.func
        stats = self.node_stats

        @functools.wraps(func)
        def on_device(*args: Any, **kwargs: Any) -> Any:
            cuda = device.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            try:
                with use_device(device):
                    result = func(*args, **kwargs)
                if cuda:
                    torch.cuda.synchronize(device)
                return result
            finally:
                wall = time.perf_counter() - start
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else 0.0
                stats[node.name] = {"device": str(device), "wall_s": wall, "peak_mem_mib": peak}
                logger.info("GPU node %s on %s: %.2f s wall, peak GPU memory %.0f MiB",
                            node.name, device, wall, peak)
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()

        return node._copy(func=on_device)



# ``--runner compcars_kedro.runner.RayRunner``: the grid's variants as Ray tasks (ray_runner.py;
# ``ray`` itself is imported only when a run starts).
from compcars_kedro.ray_runner import RayRunner  # noqa: E402

__all__ = ["GPURunner", "RayRunner"]
