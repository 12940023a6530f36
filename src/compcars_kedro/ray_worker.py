"""The worker side of :class:`~compcars_kedro.ray_runner.RayRunner`: one variant's chain in a
Ray task.

:func:`run_variant` receives a :class:`VariantSpec` (the chain, its dataset objects, the free
in-memory inputs as Ray object refs, the MLflow context), rebuilds a catalog from it, opens the
variant's nested MLflow run and runs the chain with ``GPURunner`` (``cuda`` is the GPU Ray
assigned) inside :func:`task_cpu_limit`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline

from compcars_kedro.gpu_runner import GPURunner
from compcars_kedro.mlflow_runs import process_tags, run_name, run_tags

logger = logging.getLogger(__name__)

#: joblib's (loky's) cap on "all cores": ``n_jobs=-1`` means ``min(cores, this)``
CPU_LIMIT_ENV = "LOKY_MAX_CPU_COUNT"


@contextlib.contextmanager
def task_cpu_limit(num_cpus: float | None) -> Iterator[int | None]:
    """Inside a variant's task, "all cores" means the CPUs Ray reserved for it.

    joblib's ``cpu_count()`` (hence ``n_jobs=-1``, e.g. the clustering grid's worker pool, whose
    workers each run one BLAS / OpenMP thread) honours ``$LOKY_MAX_CPU_COUNT``, read at
    every call: set to ``max(floor(num_cpus), 1)`` (Ray's rule for ``OMP_NUM_THREADS``, which
    Ray itself sets for the task) while the chain runs, restored afterwards because Ray reuses
    its worker processes. A lower limit already in the environment is kept. The BLAS / numba
    thread variables are left alone: the libraries of this process read them when loaded (too
    late here), and the clustering pool pins each task to one thread itself.
    """
    if num_cpus is None:
        yield None
        return
    saved = os.environ.get(CPU_LIMIT_ENV)
    limit = max(math.floor(num_cpus), 1)
    if saved is not None and saved.strip().isdigit():
        limit = min(limit, max(int(saved), 1))
    os.environ[CPU_LIMIT_ENV] = str(limit)
    try:
        yield limit
    finally:
        if saved is None:
            os.environ.pop(CPU_LIMIT_ENV, None)
        else:
            os.environ[CPU_LIMIT_ENV] = saved


@dataclass
class VariantSpec:
    """Everything a worker needs to run one variant's chain."""

    name: str
    pipeline: Pipeline
    datasets: dict[str, Any]
    values: dict[str, Any]  # name -> Ray ObjectRef of an in-memory free input
    return_names: list[str]
    cwd: str
    run_id: str | None
    mlflow: dict[str, Any] | None
    keys: dict[str, Any] | None
    study: str
    log_dir: str
    device: str | None = None
    num_cpus: float | None = None  # the task's CPU reservation (see task_cpu_limit)
    extra: dict[str, Any] = field(default_factory=dict)


def _configure_worker_logging(log_dir: str, name: str) -> None:
    """INFO lines of the project and Kedro to stderr (Ray shows them in the driver's console,
    prefixed with the task) and to ``logs/ray-<variant>.log``."""
    from compcars_kedro.logsetup import share_rotating_file_handlers

    share_rotating_file_handlers()  # logs/kedro.log (conf/logging.yml): the driver rotates it
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_compcars_ray", False):
            root.removeHandler(h)
            h.close()
    # a worker started in the project folder may already log to the console (conf/logging.yml)
    has_console = any(type(h) is logging.StreamHandler or type(h).__name__ == "RichHandler"
                      for h in root.handlers if not getattr(h, "_compcars_ray", False))
    handlers: list[logging.Handler] = [] if has_console else [logging.StreamHandler()]
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(log_dir) / f"ray-{name}.log", encoding="utf-8"))
    except OSError:
        pass
    for h in handlers:
        h.setFormatter(fmt)
        h._compcars_ray = True  # type: ignore[attr-defined]
        root.addHandler(h)
    for lg in ("compcars_kedro", "kedro"):
        logging.getLogger(lg).setLevel(logging.INFO)
    logging.getLogger("kedro.io.data_catalog").setLevel(logging.WARNING)


def _log_variant_to_mlflow(spec: VariantSpec, catalog: Any, status: dict[str, Any]) -> None:
    """Params (selectors), metrics (training, retrieval, clustering) of one finished variant."""
    import mlflow

    from compcars_kedro.tracking import (
        clustering_mlflow_metrics,
        retrieval_mlflow_metrics,
        training_metrics,
    )

    ns = spec.name
    mlflow.log_params({k: v for k, v in (spec.keys or {}).items() if not isinstance(v, dict)})
    if status.get("status") != "ok":
        return
    metrics: dict[str, Any] = {}
    loaders = {
        "finetuning": lambda: training_metrics(catalog.load(f"{ns}.training_history"),
                                               catalog.load(f"{ns}.finetuning_metrics")),
        "retrieval": lambda: retrieval_mlflow_metrics(catalog.load(f"{ns}.retrieval_metrics")),
        "clustering": lambda: clustering_mlflow_metrics(catalog.load(f"{ns}.clustering_metrics")),
    }
    for prefix, load in loaders.items():
        try:
            for key, value in load().items():
                metrics[f"{prefix}.{key}"] = value
        except Exception as exc:  # noqa: BLE001 - a missing table must not fail the variant
            logger.warning("variant %s: no %s metrics for MLflow (%s)", ns, prefix, exc)
    for key, value in metrics.items():
        for point in value if isinstance(value, list) else [value]:
            mlflow.log_metric(key, point["value"], step=point["step"])


def run_variant(spec: VariantSpec) -> dict[str, Any]:
    """Executed in a Ray worker: the variant's chain with ``GPURunner`` in a fresh catalog."""
    import ray
    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.io import DataCatalog

    from compcars_kedro.hooks import MlflowArtifactsHook

    start = time.perf_counter()
    if Path(spec.cwd).is_dir():
        os.chdir(spec.cwd)
    _configure_worker_logging(spec.log_dir, spec.name)
    datasets = dict(spec.datasets)
    for name, ref in spec.values.items():
        datasets[name] = MemoryDataset(ray.get(ref), copy_mode="assign")
    catalog = DataCatalog(datasets=datasets)
    hook_manager = _create_hook_manager()
    artifacts = MlflowArtifactsHook()
    artifacts.after_catalog_created(catalog)
    hook_manager.register(artifacts)

    active = None
    if spec.mlflow:
        import mlflow

        mlflow.set_tracking_uri(spec.mlflow["tracking_uri"])
        tags = {**run_tags(spec.study, spec.keys, spec.mlflow.get("env")), **process_tags(),
                "variant": spec.name, "runner": "RayRunner"}
        active = mlflow.start_run(experiment_id=spec.mlflow["experiment_id"],
                                  run_name=run_name(spec.study, spec.keys or None) if spec.keys
                                  else f"{spec.study} {spec.name}",
                                  parent_run_id=spec.mlflow["parent_run_id"], tags=tags)
    logger.info("variant %s: started on %s (pid %d, CUDA_VISIBLE_DEVICES=%s)", spec.name,
                os.uname().nodename, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    run_status = "FAILED"
    try:
        with task_cpu_limit(spec.num_cpus):
            GPURunner(device=spec.device).run(spec.pipeline, catalog, hook_manager=hook_manager,
                                              run_id=spec.run_id)
        status_name = f"{spec.name}.status"
        status = (catalog.load(status_name) if status_name in spec.pipeline.outputs()
                  else {"status": "ok"})
        if not isinstance(status, dict):
            status = {"status": "failed", "error": str(getattr(status, "error", status))}
        run_status = "FINISHED" if status.get("status") == "ok" else "FAILED"
        if active is not None:
            import mlflow

            if status.get("error"):
                mlflow.set_tag("error", str(status["error"])[:5000])
            _log_variant_to_mlflow(spec, catalog, status)
        outputs = {name: catalog.load(name) for name in spec.return_names}
        return {"variant": spec.name, "status": status.get("status", "ok"),
                "error": status.get("error"), "outputs": outputs,
                "wall_s": time.perf_counter() - start}
    finally:
        if active is not None:
            import mlflow

            mlflow.end_run(run_status)

