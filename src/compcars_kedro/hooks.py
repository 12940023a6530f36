"""Project hooks: validate parameters before any node runs; log artifacts to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from compcars_kedro.names import FINETUNED, checkpoint_name, is_finetune_node
from compcars_kedro.params import base_parameter_keys, validate_parameters
from compcars_kedro.preflight import check_upstream_data, project_conf_source

logger = logging.getLogger(__name__)


class ValidateParametersHook:
    """Fail a run before its first node when a parameter is unknown or invalid, or when an
    input of the pipeline was never produced (names the pipeline to run first).

    ``tryfirst``: runs before kedro-mlflow's ``before_pipeline_run`` opens the MLflow run, so a
    bad ``--params`` leaves no FAILED run behind.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if "parameters" in catalog:
            trains = any(is_finetune_node(n.name) for n in pipeline.nodes)
            known = base_parameter_keys(project_conf_source(run_params))
            validate_parameters(catalog.load("parameters"), check_weights=trains,
                                known_keys=known)
            logger.info("parameters validated%s", " (weights available)" if trains else "")
        check_upstream_data(pipeline, catalog)


class MlflowArtifactsHook:
    """Log chosen saved datasets (tables, checkpoints, report) as artifacts of the MLflow run.

    kedro-mlflow's ``MlflowArtifactDataset`` cannot wrap versioned datasets under Kedro 1.x (the
    inner dataset gets a save version of its own), so the files are logged after Kedro saved them,
    from the exact versioned path, into the run kedro-mlflow opened.
    """

    ARTIFACTS: dict[str, str] = {
        "rejected_images": "tables",
        "split_summary": "tables",
        "training_history": "tables",
        "finetuning_metrics": "tables",
        "retrieval_metrics": "tables",
        "clustering_metrics": "tables",
        checkpoint_name(FINETUNED): "checkpoint",
        "report_html": "report",
    }

    def __init__(self) -> None:
        self._catalog: Any = None

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        artifact_dir = self.ARTIFACTS.get(dataset_name.split(".")[-1])
        if artifact_dir is None or self._catalog is None:
            return
        import mlflow

        if mlflow.active_run() is None:
            return
        dataset = self._catalog.get(dataset_name)
        path = _saved_path(dataset)
        if path is None or not path.exists():
            logger.warning("cannot find the saved file of %s to log to MLflow", dataset_name)
            return
        prefix = dataset_name.rsplit(".", 1)[0] + "/" if "." in dataset_name else ""
        target = f"{prefix}{artifact_dir}"
        if path.is_dir():
            mlflow.log_artifacts(str(path), f"{target}/{dataset_name.split('.')[-1]}")
        else:
            mlflow.log_artifact(str(path), target)


def _saved_path(dataset: Any) -> Path | None:
    """Where a (possibly versioned) file/folder dataset just saved its data."""
    version = getattr(dataset, "_version", None)
    base = getattr(dataset, "_filepath", None)
    if base is None:
        return None
    if version is not None:
        return Path(str(dataset._get_versioned_path(dataset.resolve_save_version())))
    return Path(str(base))
