"""MLflow runs you can tell apart, and no run left ``RUNNING`` by a killed process.

kedro-mlflow opens one run per ``kedro run`` in its ``before_pipeline_run`` hook, named after the
pipeline. Two project hooks sit around it (pluggy order: ``tryfirst`` before, ``trylast`` after):

* :class:`CloseStaleRunsHook` (``tryfirst``): before the new run opens, every ``RUNNING`` run
  whose process is gone (same host, its pid dead or reused) is closed as ``KILLED``. Each run
  records its host, pid and the process start time (:func:`process_tags`); runs without them, or
  from another host, are left alone (they cannot be checked).
* :class:`NameRunHook` (``trylast``): once the run is open, it is renamed by pipeline and variant
  (``finetuning resnet50-arcface-front+rear s0``) and tagged with ``model``, ``loss``, ``views``,
  ``seed``, ``env`` and ``pipeline``.

Parameter validation (:class:`compcars_kedro.hooks.ValidateParametersHook`) is ``tryfirst`` too,
so a bad ``--params`` fails before kedro-mlflow opens a run: no FAILED run is left behind.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

HOST_TAG = "compcars.host"
PID_TAG = "compcars.pid"
STARTED_TAG = "compcars.process_started"
SELECTORS = ("model", "loss", "views", "seed")


# --------------------------------------------------------------------------- names and tags


def pipeline_label(pipeline_names: list[str] | None) -> str:
    names = list(pipeline_names or ["__default__"])
    return "+".join("default" if n == "__default__" else n for n in names)


def variant_label(keys: dict[str, Any]) -> str:
    """``resnet50-arcface-front+rear s0`` (plus the split seed of a grid variant, ``ss42``, and
    any extra selector, e.g. CLIP layers)."""
    label = f"{keys['model']}-{keys['loss']}-{keys['views']} s{keys['seed']}"
    extra = [f"ss{keys['split_seed']}"] if keys.get("split_seed") is not None else []
    extra += [f"{k}={keys[k]}" for k in ("component", "trainable_layers") if k in keys]
    return " ".join([label, *extra])


def run_name(pipeline: str, keys: dict[str, Any] | None) -> str:
    return f"{pipeline} {variant_label(keys)}" if keys else pipeline


def run_tags(pipeline: str, keys: dict[str, Any] | None, env: str | None) -> dict[str, str]:
    tags = {"pipeline": pipeline}
    if env:
        tags["env"] = str(env)
    for key, value in (keys or {}).items():
        if value is not None and not isinstance(value, dict | list):
            tags[key] = str(value)
    return tags


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - no psutil, or no such process
        return None


def process_tags() -> dict[str, str]:
    """Host, pid and start time of this process (how a later run tells it is gone)."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    started = _process_started(os.getpid())
    if started is not None:
        tags[STARTED_TAG] = f"{started:.2f}"
    return tags


def _process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if started is None:
        return True
    now = _process_started(pid)
    return now is None or abs(now - float(started)) < 1.0  # else the pid was reused


def close_stale_runs(client: Any) -> list[str]:
    """Close as ``KILLED`` the ``RUNNING`` runs of dead processes on this host; their ids."""
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    closed = []
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not str(tags.get(PID_TAG, "")).isdigit():
            continue
        pid = int(tags[PID_TAG])
        if _process_alive(pid, tags.get(STARTED_TAG)):
            continue
        client.set_tag(run.info.run_id, "compcars.closed_because",
                       f"process {pid} on {host} was gone when the next run started")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
        logger.warning("MLflow run %s (%s) was left RUNNING by process %d, which is gone: "
                       "closed as KILLED", run.info.run_id, tags.get("mlflow.runName", "?"), pid)
    return closed


# --------------------------------------------------------------------------- what a run is


def run_keys(pipeline: Any, catalog: Any) -> dict[str, Any] | None:
    """Selectors of the single variant a run trains or evaluates; None for other pipelines.

    From the parameters when the run resolves a finetuning config itself, else from the saved
    ``finetuning_config`` it reads (embeddings / clustering alone).
    """
    inputs = set().union(*(n.inputs for n in pipeline.nodes)) if pipeline.nodes else set()
    if "params:model" in inputs and "parameters" in catalog:
        params = catalog.load("parameters")
        return {"model": params.get("model"), "loss": params.get("loss"),
                "views": params.get("views"), "seed": (params.get("training") or {}).get("seed")}
    if "finetuning_config" in inputs:
        try:
            if catalog.exists("finetuning_config"):
                keys = catalog.load("finetuning_config").get("keys", {})
                return {k: keys.get(k) for k in SELECTORS}
        except Exception as exc:  # noqa: BLE001 - naming must never fail a run
            logger.debug("no finetuning_config to name the MLflow run: %s", exc)
    return None


def _run_env(run_params: dict[str, Any]) -> str:
    """``--env``, else ``$KEDRO_ENV``, else the project's default run env (``local``)."""
    if run_params.get("env"):
        return str(run_params["env"])
    from kedro.framework.project import settings

    return (os.environ.get("KEDRO_ENV")
            or settings.CONFIG_LOADER_ARGS.get("default_run_env") or "local")


def _grid_variants(pipeline: Any) -> int:
    """Number of variant chains (namespaces no other namespace reads from, as RayRunner sees
    them: the grid's ``split_ss<seed>`` tables are not variants)."""
    from compcars_kedro.variants import split_pipeline

    try:
        return len(split_pipeline(pipeline)[1])
    except ValueError:
        return len({n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace})


# --------------------------------------------------------------------------- hooks


class CloseStaleRunsHook:
    """Before kedro-mlflow opens this run: close the runs killed processes left RUNNING."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        try:
            from mlflow import MlflowClient

            close_stale_runs(MlflowClient())
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never stop a run
            logger.warning("could not check MLflow for stale RUNNING runs: %s", exc)


class NameRunHook:
    """After kedro-mlflow opened the run: name it by pipeline and variant, tag the selectors."""

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import mlflow

        run = mlflow.active_run()
        if run is None:
            return
        label = pipeline_label(run_params.get("pipeline_names"))
        keys = run_keys(pipeline, catalog)
        name = run_name(label, keys)
        n_variants = _grid_variants(pipeline)
        if keys is None and n_variants:
            name = f"{label} ({n_variants} variants)"
        tags = {**run_tags(label, keys, _run_env(run_params)), **process_tags()}
        try:
            mlflow.MlflowClient().update_run(run.info.run_id, name=name)
            mlflow.set_tags(tags)
        except Exception as exc:  # noqa: BLE001 - naming must never fail a run
            logger.warning("could not name the MLflow run: %s", exc)
            return
        logger.info("MLflow run %s: '%s'", run.info.run_id, name)
