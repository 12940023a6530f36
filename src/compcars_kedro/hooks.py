"""Project hooks: validate all parameters before any node runs."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from compcars_kedro.params import validate_parameters

logger = logging.getLogger(__name__)


class ValidateParametersHook:
    """Fail a run before its first node when a parameter is unknown or invalid."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if "parameters" in catalog:
            validate_parameters(catalog.load("parameters"))
            logger.info("parameters validated")
