"""Checks a run does before its first node: parameters (params.py) and upstream data.

A pipeline whose inputs were never produced (``kedro run --pipelines finetuning`` on a fresh
clone) would otherwise end in Kedro's ``VersionNotFoundError`` for ``crops`` after the session
started; here it fails at once with the pipeline to run first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

#: Datasets that load an empty / ``None`` value until some pipeline writes them (optional inputs).
OPTIONAL_DATASET_TYPES = ("OptionalCSVDataset", "GridResultsDataset")


def _has_exists(dataset: Any) -> bool:
    return type(dataset)._exists is not AbstractDataset._exists


def _producers(dataset_name: str, pipelines: dict[str, Any]) -> list[str]:
    """Registered pipelines that output ``dataset_name``, smallest first."""
    found = []
    for name, pipe in pipelines.items():
        if name == "__default__":
            continue
        try:
            outputs = pipe.all_outputs()
        except Exception:  # noqa: BLE001 - a pipeline that cannot be built produces nothing
            continue
        if dataset_name in outputs:
            found.append((len(pipe.nodes), name))
    return [name for _, name in sorted(found)]


def missing_upstream_data(pipeline: Any, catalog: Any, pipelines: dict[str, Any]) -> list[str]:
    """One line per free input of ``pipeline`` that does not exist: what to run to make it."""
    problems = []
    for name in sorted(pipeline.inputs()):
        if name == "parameters" or name.startswith("params:") or name not in catalog:
            continue
        dataset = catalog.get(name)
        if type(dataset).__name__ in OPTIONAL_DATASET_TYPES or not _has_exists(dataset):
            continue
        if dataset.exists():
            continue
        if type(dataset).__name__ == "RawImagesDataset":
            path = dataset._describe().get("path")
            problems.append(
                f"  {name}: the raw data folder {path} does not exist; set raw_path "
                "(`--params raw_path=...`, $COMPCARS_ROOT or conf/local/globals.yml), or "
                "`make sample` for the generated sample")
            continue
        producers = _producers(name, pipelines)
        if producers:
            problems.append(f"  {name}: never produced; run `kedro run --pipelines "
                            f"{producers[0]}` first (same --env)")
        else:
            problems.append(f"  {name}: does not exist ({dataset._describe()})")
    return problems


def check_upstream_data(pipeline: Any, catalog: Any) -> None:
    """Raise before any node runs when inputs of ``pipeline`` were never produced."""
    from kedro.framework.project import pipelines

    problems = missing_upstream_data(pipeline, catalog, dict(pipelines))
    if problems:
        raise RuntimeError("this pipeline needs data that does not exist yet:\n"
                           + "\n".join(problems))


def project_conf_source(run_params: dict[str, Any]) -> Path:
    """The conf folder of the project being run."""
    from kedro.framework.project import settings

    conf = Path(settings.CONF_SOURCE)
    if not conf.is_absolute():
        conf = Path(run_params.get("project_path") or Path.cwd()) / conf
    return conf
