"""Process environment defaults: telemetry off, offline hubs, caches inside the project.

Imported by ``settings.py`` (so every ``kedro`` command gets it) and by the test suite.
Values already set by the user are never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "KEDRO_DISABLE_TELEMETRY": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # The project never downloads: pretrained weights come from local paths or caches.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

CACHE_DIRS = {
    "TORCH_HOME": "torch",
    "HF_HOME": "hf",
    "MPLCONFIGDIR": "matplotlib",
    "NUMBA_CACHE_DIR": "numba",
}


def configure_environment(root: Path | None = None) -> dict[str, str]:
    """Set telemetry-off and cache variables unless already set; return what applies now."""
    root = Path(root) if root is not None else PROJECT_ROOT
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    for key, sub in CACHE_DIRS.items():
        if key not in os.environ:
            path = root / ".cache" / sub
            path.mkdir(parents=True, exist_ok=True)
            os.environ[key] = str(path)
    return {k: os.environ[k] for k in (*TELEMETRY_OFF, *CACHE_DIRS)}
