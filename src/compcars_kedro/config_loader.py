"""The project's config loader: Kedro's ``OmegaConfigLoader`` plus one rule for ``raw_path``.

Kedro reads ``conf/base`` plus ONE env (``local`` by default, ``compcars`` / ``dvc`` with
``--env``), so a ``raw_path`` written in ``conf/local/globals.yml`` would be ignored under
``--env compcars``. The raw data location is machine-specific, hence one rule in every env:

1. ``--params raw_path=...`` (the command line),
2. the ``COMPCARS_ROOT`` environment variable,
3. ``raw_path`` in ``conf/local/globals.yml`` (also under ``--env compcars`` / ``--env dvc``),
4. the env's own ``raw_path`` (``conf/<env>/globals.yml``, else ``conf/base/globals.yml``).

The result is the ``raw_path`` global that the catalog's ``compcars_raw`` reads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from kedro.config import OmegaConfigLoader

logger = logging.getLogger(__name__)

RAW_PATH_ENV = "COMPCARS_ROOT"
LOCAL_ENV = "local"


def local_raw_path(conf_source: str | Path) -> str | None:
    """``raw_path`` of ``conf/local/globals*.yml`` (plain YAML), if any."""
    for path in sorted(Path(conf_source, LOCAL_ENV).glob("globals*.y*ml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and data.get("raw_path") is not None:
            return str(data["raw_path"])
    return None


def resolve_raw_path(conf_source: str | Path, env_default: Any,
                     runtime_params: dict[str, Any] | None) -> tuple[Any, str]:
    """``(raw_path, where it came from)`` following the module's precedence."""
    if runtime_params and runtime_params.get("raw_path") is not None:
        return str(runtime_params["raw_path"]), "--params raw_path"
    if os.environ.get(RAW_PATH_ENV):
        return os.environ[RAW_PATH_ENV], f"${RAW_PATH_ENV}"
    local = local_raw_path(conf_source)
    if local is not None:
        return local, "conf/local/globals.yml"
    return env_default, "globals.yml of the env"


class ProjectConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose ``globals`` carry the resolved ``raw_path``."""

    def __getitem__(self, key: str) -> dict[str, Any]:
        # OmegaConf resolvers are process-global: another loader built later (e.g. while the
        # pipelines are registered) would otherwise answer `${globals:...}` with ITS globals.
        self._register_globals_resolver()
        config = super().__getitem__(key)
        if key != "globals":
            return config
        config = dict(config or {})
        raw_path, source = resolve_raw_path(self.conf_source, config.get("raw_path"),
                                            self.runtime_params)
        if raw_path is not None:
            config["raw_path"] = raw_path
            logger.debug("raw_path=%s (from %s)", raw_path, source)
        return config
