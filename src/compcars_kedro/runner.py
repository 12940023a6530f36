"""The project's runners, by the names ``kedro run --runner`` takes:

    kedro run --runner compcars_kedro.runner.GPURunner
    kedro run --pipelines grid --runner compcars_kedro.runner.RayRunner

:class:`~compcars_kedro.gpu_runner.GPURunner` (gpu_runner.py) places ``gpu``-tagged nodes on the
accelerator; :class:`~compcars_kedro.ray_runner.RayRunner` (ray_runner.py) runs the grid's
variants as Ray tasks (``ray`` itself is imported only when a run starts). This module only
names them, so that neither imports the other through it.
"""

from compcars_kedro.gpu_runner import GPURunner
from compcars_kedro.ray_runner import RayRunner

__all__ = ["GPURunner", "RayRunner"]
