"""``RayRunner``: the grid's variants as parallel Ray tasks, one GPU (or CPU slot) each.

    kedro run --pipelines grid --runner compcars_kedro.runner.RayRunner
    kedro run --pipelines grid --runner compcars_kedro.runner.RayRunner \\
        --runner-params num_gpus=1,num_cpus=4,address=auto

How a pipeline is split: nodes in a namespace form that *variant*'s chain (the grid names each
chain after its variant, ``pipelines/grid``). Nodes outside every namespace are *shared*: those
that no variant depends on run first in the driver (e.g. ``data_engineering`` when it is part of
the run), then every variant runs as one Ray task reserving ``num_cpus`` and ``num_gpus``
(default: 1 GPU per variant when the cluster has GPUs, else 0), then the remaining shared nodes
(the grid's collection) run in the driver. A pipeline without namespaces runs as in
:class:`~compcars_kedro.runner.GPURunner`.

What travels to a worker, and why: Kedro 1.x catalogs hold hooks, factory patterns and a
``save_version``; their datasets, however, are plain picklable objects (``ParallelRunner``
relies on the same property). For each variant the driver resolves every dataset of its chain
(factory patterns included) and sends the dataset *objects*, not their data, so the worker's
catalog writes exactly the same versioned paths (same ``save_version`` as the rest of the run) and
reads the same inputs. Free inputs held in memory (``params:*``, or a catalog built in code) are
sent as values through Ray's object store, once for all variants. The worker runs the chain with
``GPURunner`` (device accounting; ``cuda`` is the GPU Ray assigned). Re-creating a Kedro session
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
import inspect
import logging
import os
import secrets
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import AbstractRunner

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


def split_pipeline(pipeline: Pipeline) -> tuple[Pipeline, dict[str, Pipeline], Pipeline]:
    """(shared nodes before, {variant: its chain}, shared nodes after).

    A variant is a top-level namespace that no other namespace reads from; a namespace others
    read from (e.g. the grid's ``split_ss<seed>`` split tables) is shared, like un-namespaced
    nodes.
    """
    groups: dict[str, list[Node]] = {}
    shared: list[Node] = []
    for n in pipeline.nodes:
        if n.namespace:
            groups.setdefault(n.namespace.split(".")[0], []).append(n)
        else:
            shared.append(n)
    deps = pipeline.node_dependencies
    group_of = {n: g for g, nodes in groups.items() for n in nodes}
    feeders = {group_of[p] for n, parents in deps.items() for p in parents
               if p in group_of and n in group_of and group_of[n] != group_of[p]}
    variants = {g: nodes for g, nodes in groups.items() if g not in feeders}
    shared = [n for n in pipeline.nodes if n not in group_of or group_of[n] in feeders]
    variant_nodes = {n for nodes in variants.values() for n in nodes}
    after: set[Node] = set()
    for n in pipeline.nodes:  # topological order: parents are classified first
        if n in variant_nodes:
            continue
        if any(p in variant_nodes or p in after for p in deps[n]):
            after.add(n)
    before = [n for n in shared if n not in after]
    for name, nodes in variants.items():
        for n in nodes:
            if any(p in after for p in deps[n]):
                raise ValueError(f"variant {name}: node {n.name} depends on a shared node that "
                                 "itself needs a variant's output; RayRunner cannot order it")
    return (Pipeline(before), {k: Pipeline(v) for k, v in sorted(variants.items())},
            Pipeline([n for n in shared if n in after]))


def _variant_of(chain: Pipeline) -> Any:
    """The :class:`~compcars_kedro.grid.Variant` bound into the chain's status node, if any."""
    for n in chain.nodes:
        func = n.func
        try:
            bound = inspect.getclosurevars(func).nonlocals.get("variant")
        except (TypeError, ValueError):
            continue
        if bound is not None and hasattr(bound, "keys"):
            return bound
    return None


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
    extra: dict[str, Any] = field(default_factory=dict)


def _configure_worker_logging(log_dir: str, name: str) -> None:
    """INFO lines of the project and Kedro to stderr (Ray shows them in the driver's console,
    prefixed with the task) and to ``logs/ray-<variant>.log``."""
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
    from compcars_kedro.runner import GPURunner

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

        from compcars_kedro.mlflow_runs import process_tags, run_name, run_tags

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
            ``OMP_NUM_THREADS`` (torch threads) to it.
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
        from compcars_kedro.runner import GPURunner

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
              ray: Any) -> VariantSpec:
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
        variant = _variant_of(chain)
        keys = dict(variant.keys) if variant is not None else None
        study = keys.get("study", "grid") if keys else "grid"
        return VariantSpec(name=name, pipeline=chain, datasets=datasets, values=values,
                           return_names=return_names, cwd=str(Path.cwd()), run_id=run_id,
                           mlflow=mlflow_ctx, keys=keys, study=study,
                           log_dir=str(Path.cwd() / "logs"), device=self.device)

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
                spec = self._spec(name, chain, after, catalog, refs, run_id, mlflow_ctx, ray)
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
