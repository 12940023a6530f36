"""Project settings (Kedro 1.x)."""

from __future__ import annotations

import os

from compcars_kedro._environment import configure_environment
from compcars_kedro.config_loader import ProjectConfigLoader
from compcars_kedro.hooks import MlflowArtifactsHook, ValidateParametersHook
from compcars_kedro.logsetup import configure_console_logging, install_short_errors
from compcars_kedro.mlflow_runs import CloseStaleRunsHook, NameRunHook

configure_environment()
configure_console_logging()  # plain console lines when not a terminal (conf/logging.yml)
install_short_errors()  # the project's clear errors without a console traceback


def _env(key: str, default: str | None = None) -> str | None:
    """``${env:VAR,default}`` resolver usable in every config file (catalog, globals, parameters)."""
    return os.environ.get(key, default)


HOOKS = (ValidateParametersHook(), MlflowArtifactsHook(), CloseStaleRunsHook(), NameRunHook())

def _project_root() -> str:
    """``${project_root:}``: the Kedro project folder, also when called from ``notebooks/``."""
    from pathlib import Path

    from kedro.utils import find_kedro_project

    return str(find_kedro_project(Path.cwd()) or Path.cwd())


# OmegaConfigLoader + raw_path from --params / $COMPCARS_ROOT / conf/local in every env
CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Soft merge: `conf/<env>` and `--params training.lr=...` override single keys and keep
    # their siblings instead of replacing the whole top-level block.
    "merge_strategy": {"parameters": "soft", "catalog": "soft", "globals": "soft"},
    "custom_resolvers": {"env": _env, "project_root": _project_root},
    "config_patterns": {
        "globals": ["globals*", "globals*/**"],
    },
}
