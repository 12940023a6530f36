"""Shared fixtures: offline/telemetry-off environment, tiny generated samples, project copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compcars_kedro._environment import configure_environment

ROOT = Path(__file__).resolve().parents[1]
configure_environment(ROOT)


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CompCars-layout sample (with every planted broken input), generated once."""
    from compcars_kedro.sample import TINY, generate_sample

    out = tmp_path_factory.mktemp("sample") / "compcars"
    generate_sample(out, TINY)
    return out


def make_project_copy(dest: Path, raw_path: Path, extra_local: dict[str, str] | None = None) -> Path:
    """A runnable copy of the project in ``dest``: pyproject, conf (base + a local env), src link.

    ``data/`` is fresh, so runs never touch the checkout's data folder.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for name in ("base", "compcars"):
        if (ROOT / "conf" / name).is_dir():
            shutil.copytree(ROOT / "conf" / name, dest / "conf" / name)
    local = dest / "conf" / "local"
    local.mkdir(parents=True)
    (local / "globals.yml").write_text(f"raw_path: {raw_path}\n")
    for fname, text in (extra_local or {}).items():
        (local / fname).write_text(text)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / ".telemetry").write_text("consent: false\n")
    for d in ("01_raw", "02_intermediate", "03_primary", "05_model_input", "06_models",
              "07_model_output", "08_reporting"):
        (dest / "data" / d).mkdir(parents=True, exist_ok=True)
    return dest


def kedro_cli(project: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real ``kedro`` CLI of this venv inside ``project``."""
    kedro = Path(sys.executable).with_name("kedro")
    env = dict(os.environ)
    return subprocess.run([str(kedro), *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def project_copy(tmp_path: Path, tiny_sample: Path) -> Path:
    return make_project_copy(tmp_path / "project", tiny_sample)
