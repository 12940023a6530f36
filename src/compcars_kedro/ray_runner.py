"""``RayRunner``: the grid's variants as parallel Ray tasks, one GPU (or CPU slot) each.

    kedro run --pipelines grid --runner compcars_kedro.runner.RayRunner
    kedro run --pipelines grid --runner compcars_kedro.runner.RayRunner \\
        --runner-params num_gpus=1,num_cpus=4,address=auto

How a pipeline is split: nodes in a namespace form that *variant*'s chain (the grid names each
chain after its variant, ``pipelines/grid``). Nodes outside every namespace are *shared*: those
that no variant depends on run first in the driver (e.g. ``data_engineering`` when it is part of
the run), then every variant runs as one Ray task reserving ``num_cpus`` and ``num_gpus``
(default: 1 GPU per variant when the cluster has GPUs, else 0), then the remaining shared nodes
(the grid's collection) run in the driver (:func:`compcars_kedro.variants.split_pipeline`). A
pipeline without namespaces runs as in :class:`~compcars_kedro.gpu_runner.GPURunner`.

What travels to a worker, and why: Kedro 1.x catalogs hold hooks, factory patterns and a
``save_version``; their datasets, however, are plain picklable objects (``ParallelRunner``
relies on the same property). For each variant the driver resolves every dataset of its chain
(factory patterns included) and sends the dataset *objects*, not their data, so the worker's
catalog writes exactly the same versioned paths (same ``save_version`` as the rest of the run) and
reads the same inputs. Free inputs held in memory (``params:*``, or a catalog built in code) are
sent as values through Ray's object store, once for all variants. The worker
(:mod:`compcars_kedro.ray_worker`) runs the chain with ``GPURunner`` (device accounting; ``cuda``
is the GPU Ray assigned; joblib's "all cores" capped to the task's ``num_cpus``). Re-creating a Kedro session
in every worker would also work but needs ``conf/``, the env and every ``--params`` replicated on
each machine, and starts kedro-mlflow again (a top-level run per worker); sending datasets needs
only the installed package and the same paths (a shared filesystem or an fsspec URL).

Per variant, kept from the sequential grid: its own outputs (namespaced datasets), failure
isolation (the grid's guards turn a node error into a ``failed`` status; a task that dies, e.g.
killed or out of memory, is recorded as a failed status by the driver, and the other variants go
on) and skip-existing (decided when the grid pipeline is built). Each variant is its own MLflow
run, nested under the run kedro-mlflow opened for ``kedro run`` (named ``grid <variant>``, tagged
with model, loss, views, seed, its metrics and artifacts).

Ray: ``address`` (runner param) or ``$RAY_ADDRESS`` connects to a running cluster; otherwise an
embedded local instance starts: no dashboard, no usage stats, every server bound to 127.0.0.1,
a per-run random auth token kept in the environment (nothing written to ``~/.ray``), its temp dir
in ``.cache/ray``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
import traceback
from pathlib import Path
from typing import Any

from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import AbstractRunner

from compcars_kedro.gpu_runner import GPURunner
from compcars_kedro.ray_worker import VariantSpec, run_variant
from compcars_kedro.variants import split_pipeline, variant_of

logger = logging.getLogger(__name__)

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Local node = the loopback address, so Ray's servers listen on 127.0.0.1 only.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


#: Ray's unix sockets live under its temp dir; AF_UNIX paths are limited to 107 bytes.
_MAX_TEMP_DIR = 40


def _project_root() -> Path:
    from kedro.utils import find_kedro_project

    from compcars_kedro._environment import PROJECT_ROOT

    found = find_kedro_project(Path.cwd())
    if found is None and (PROJECT_ROOT / "pyproject.toml").exists():
        found = PROJECT_ROOT
    return Path(found or Path.cwd()).resolve()


def ray_temp_dir() -> str:
    """``<project>/.cache/ray``, or a short symlink to it (``/tmp/compcars-ray-<hash>``) when the
    project path is too long for Ray's socket paths."""
    target = _project_root() / ".cache" / "ray"
    target.mkdir(parents=True, exist_ok=True)
    if len(str(target)) <= _MAX_TEMP_DIR:
        return str(target)
    digest = hashlib.sha1(str(target).encode()).hexdigest()[:10]
    link = Path(tempfile.gettempdir()) / f"compcars-ray-{digest}"
    if not (link.is_symlink() and link.resolve() == target.resolve()):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return str(link)



def _as_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"RayRunner: {name}={value!r} is not a number") from exc
    if out < 0:
        raise ValueError(f"RayRunner: {name}={value!r} must be >= 0")
    return int(out) if float(out).is_integer() else out  # type: ignore[return-value]


class RayRunner(AbstractRunner):
    """Shared nodes in the driver, every variant's chain as its own Ray task.

    Args:
        address: Ray cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); default
            ``$RAY_ADDRESS``, else an embedded local instance.
        num_cpus: CPUs each variant task reserves (default 1); Ray also caps the task's
            ``OMP_NUM_THREADS`` (torch threads) to it, and joblib's "all cores"
            (``n_jobs=-1``, the clustering grid) means it inside the task.
        num_gpus: GPUs each variant task reserves (default 1 when the cluster has GPUs, else 0).
        cluster_cpus / cluster_gpus: size of the embedded local instance (default: this machine).
        device: device of ``gpu`` nodes inside a task (default: the GPU Ray assigned, else CPU).
    """

    def __init__(self, is_async: bool = False, address: str | None = None,
                 num_cpus: float | int | str | None = None,
                 num_gpus: float | int | str | None = None,
                 cluster_cpus: int | str | None = None, cluster_gpus: int | str | None = None,
                 device: str | None = None) -> None:
        super().__init__(is_async=is_async)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = _as_int(num_cpus, "num_cpus")
        self.num_gpus = _as_int(num_gpus, "num_gpus")
        self.cluster_cpus = _as_int(cluster_cpus, "cluster_cpus")
        self.cluster_gpus = _as_int(cluster_gpus, "cluster_gpus")
        self.device = device
        self.results: dict[str, dict[str, Any]] = {}
        self._started_ray = False

    # ------------------------------------------------------------------ AbstractRunner API

    def _get_executor(self, max_workers: int) -> None:
        return None

    def _run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None,
             run_id: str | None = None) -> None:
        before, variants, after = split_pipeline(pipeline)
        sequential = GPURunner(is_async=self._is_async, device=self.device)
        if before.nodes:
            logger.info("RayRunner: %d shared node(s) first, in the driver", len(before.nodes))
            sequential._run(before, catalog, hook_manager, run_id)
        if variants:
            self._run_variants(variants, after, catalog, run_id)
        if after.nodes:
            logger.info("RayRunner: %d shared node(s) after the variants, in the driver",
                        len(after.nodes))
            sequential._run(after, catalog, hook_manager, run_id)

    # ------------------------------------------------------------------ Ray

    def _init_ray(self) -> Any:
        import sys

        for key, value in RAY_ENV.items():
            os.environ.setdefault(key, value)
        local = not self.address
        if local and not os.environ.get("RAY_AUTH_MODE"):
            # token auth without ~/.ray/auth_token: a per-run token that workers inherit
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(24))
            if "ray" in sys.modules:  # imported earlier: refresh the config it read then
                from ray._raylet import Config

                Config.initialize("")
        import ray

        if ray.is_initialized():
            return ray
        if not local:
            logger.info("RayRunner: joining the Ray cluster at %s", self.address)
            ray.init(address=self.address, log_to_driver=True)
            return ray
        temp_dir = ray_temp_dir()
        kwargs: dict[str, Any] = {}
        if self.cluster_cpus is not None:
            kwargs["num_cpus"] = self.cluster_cpus
        if self.cluster_gpus is not None:
            kwargs["num_gpus"] = self.cluster_gpus
        ray.init(include_dashboard=False, _temp_dir=str(temp_dir), log_to_driver=True,
                 logging_level=logging.WARNING, **kwargs)
        self._started_ray = True
        logger.info("RayRunner: embedded local Ray on 127.0.0.1 with %s", ray.cluster_resources())
        return ray

    def _task_resources(self, ray: Any) -> tuple[float, float]:
        cpus = self.num_cpus if self.num_cpus is not None else 1
        if self.num_gpus is not None:
            gpus = self.num_gpus
        else:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        return cpus, gpus

    def _mlflow_context(self) -> dict[str, Any] | None:
        try:
            import mlflow
        except ImportError:  # pragma: no cover
            return None
        run = mlflow.active_run()
        if run is None:
            return None
        tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags  # as tagged by now
        return {"tracking_uri": mlflow.get_tracking_uri(), "experiment_id": run.info.experiment_id,
                "parent_run_id": run.info.run_id, "env": tags.get("env")}

    def _spec(self, name: str, chain: Pipeline, after: Pipeline, catalog: Any,
              refs: dict[str, Any], run_id: str | None, mlflow_ctx: dict[str, Any] | None,
              ray: Any, num_cpus: float | None = None) -> VariantSpec:
        import cloudpickle

        datasets, values, problems = {}, {}, []
        free = chain.inputs()
        for ds in sorted(chain.datasets()):
            dataset = catalog.get(ds, fallback_to_runtime_pattern=True)
            if isinstance(dataset, MemoryDataset):
                if ds in free:
                    if ds not in refs:
                        refs[ds] = ray.put(catalog.load(ds))
                    values[ds] = refs[ds]
                continue  # an in-memory output or intermediate: a new one in the worker
            try:
                cloudpickle.dumps(dataset)
            except Exception as exc:  # noqa: BLE001 - reported below with every offender
                problems.append(f"{ds} ({type(dataset).__name__}: {exc})")
                continue
            datasets[ds] = dataset
        if problems:
            raise ValueError("RayRunner: these datasets cannot be sent to a Ray worker: "
                             + "; ".join(problems))
        needed_after = after.inputs() if after.nodes else set()
        return_names = sorted(
            ds for ds in chain.outputs()
            if ds in needed_after
            and isinstance(catalog.get(ds, fallback_to_runtime_pattern=True), MemoryDataset))
        variant = variant_of(chain)
        keys = dict(variant.keys) if variant is not None else None
        study = keys.get("study", "grid") if keys else "grid"
        return VariantSpec(name=name, pipeline=chain, datasets=datasets, values=values,
                           return_names=return_names, cwd=str(Path.cwd()), run_id=run_id,
                           mlflow=mlflow_ctx, keys=keys, study=study,
                           log_dir=str(Path.cwd() / "logs"), device=self.device,
                           num_cpus=num_cpus)

    def _run_variants(self, variants: dict[str, Pipeline], after: Pipeline, catalog: Any,
                      run_id: str | None) -> None:
        ray = self._init_ray()
        try:
            cpus, gpus = self._task_resources(ray)
            logger.info("RayRunner: %d variant(s) as Ray tasks, each reserving %s CPU and %s GPU",
                        len(variants), cpus, gpus)
            remote = ray.remote(run_variant)
            mlflow_ctx = self._mlflow_context()
            refs: dict[str, Any] = {}
            pending: dict[Any, VariantSpec] = {}
            for name, chain in variants.items():
                spec = self._spec(name, chain, after, catalog, refs, run_id, mlflow_ctx, ray,
                                  num_cpus=cpus)
                task = remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                      name=f"variant:{name}").remote(spec)
                pending[task] = spec
            done = 0
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(ready[0])
                done += 1
                try:
                    result = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - one dead task must not stop the rest
                    result = self._record_crash(spec, catalog, exc)
                for name, value in result.get("outputs", {}).items():
                    catalog.save(name, value)
                self.results[spec.name] = result
                logger.info("RayRunner: variant %s %s in %.1f s (%d/%d)%s", spec.name,
                            result["status"], result.get("wall_s", float("nan")), done,
                            done + len(pending),
                            f": {result['error']}" if result.get("error") else "")
        finally:
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False

    def _record_crash(self, spec: VariantSpec, catalog: Any, exc: Exception) -> dict[str, Any]:
        """A task that died outside the grid's guards: its status says so, the run goes on."""
        error = f"Ray task failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1]}"
        logger.error("variant %s: %s", spec.name, error)
        status_name = f"{spec.name}.status"
        if status_name in spec.pipeline.outputs():
            status = {**(spec.keys or {"study": spec.study, "variant": spec.name}),
                      "status": "failed", "node": "ray_task", "error": error,
                      "traceback": "".join(traceback.format_exception_only(type(exc), exc))[-4000:]}
            catalog.save(status_name, status)
        return {"variant": spec.name, "status": "failed", "error": error, "outputs": {}}
