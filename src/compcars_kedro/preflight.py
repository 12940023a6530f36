"""Checks a run does before its first node: parameters (params.py) and upstream data.

A pipeline whose inputs were never produced (``kedro run --pipelines finetuning`` on a fresh
clone) would otherwise end in Kedro's ``VersionNotFoundError`` for ``crops`` after the session
started; here it fails at once with the pipeline to run first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

#: Datasets that load an empty / ``None`` value until some pipeline writes them (optional inputs).
OPTIONAL_DATASET_TYPES = ("OptionalCSVDataset", "GridResultsDataset")


def _has_exists(dataset: Any) -> bool:
    return type(dataset)._exists is not AbstractDataset._exists


#: Pipelines searched first for the producer of a missing input (the main chain, in order).
MAIN_CHAIN = ("data_engineering", "finetuning", "embeddings", "clustering", "reporting")


def _project_pipelines() -> Iterator[tuple[str, Any]]:
    """Every pipeline of ``compcars_kedro/pipelines/`` (main chain first), built directly:
    ``kedro run --pipelines X`` registers only X, so the registry does not know the others."""
    import importlib
    import pkgutil

    from compcars_kedro import pipelines as package

    names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg]
    for name in [n for n in MAIN_CHAIN if n in names] + [n for n in names if n not in MAIN_CHAIN]:
        try:
            yield name, importlib.import_module(f"{package.__name__}.{name}.pipeline"
                                                ).create_pipeline()
        except Exception:  # noqa: BLE001 - a pipeline that cannot be built produces nothing
            continue


def _producer(dataset_name: str, pipelines: Iterable[tuple[str, Any]]) -> str | None:
    """The first pipeline that outputs ``dataset_name``."""
    for name, pipe in pipelines:
        if dataset_name in pipe.all_outputs():
            return name
    return None


def missing_upstream_data(pipeline: Any, catalog: Any,
                          pipelines: Iterable[tuple[str, Any]] | None = None) -> list[str]:
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
        producer = _producer(name, pipelines if pipelines is not None else _project_pipelines())
        if producer:
            problems.append(f"  {name}: never produced; run `kedro run --pipelines "
                            f"{producer}` first (same --env)")
        else:
            problems.append(f"  {name}: does not exist ({dataset._describe()})")
    return problems


def check_upstream_data(pipeline: Any, catalog: Any) -> None:
    """Raise before any node runs when inputs of ``pipeline`` were never produced."""
    problems = missing_upstream_data(pipeline, catalog)
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
