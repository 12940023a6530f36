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
os.environ.pop("COMPCARS_ROOT", None)  # raw_path precedence: tests choose their raw data


#: The longest tests (seconds on 2 idle cores, 2026-12-02), started first so that pytest-xdist's
#: workers do not end on one of them alone (`make test` runs 2 workers).
LONGEST_FIRST = (
    "tests/test_readme.py::test_every_readme_kedro_run_command_works",  # ~150 s
    "tests/integrations/test_dvc.py::test_new_gpu_machine_recipe",  # ~65-95 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order: :data:`LONGEST_FIRST`, then the other ``slow`` tests, then the rest (each stable)."""
    def rank(item: pytest.Item) -> int:
        if any(item.nodeid.startswith(p) for p in LONGEST_FIRST):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)


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


TINY_DE_PARAMS = {"min_images_per_class_per_view": 3, "unseen_fraction": 0.34, "num_workers": 1,
                  "crop": {"size": 32, "num_workers": 1}}


@pytest.fixture(scope="session")
def tiny_crops(tiny_sample: Path):
    """(crops store, multiview pairs) of the tiny sample at 32 px, through the real nodes."""
    from compcars_kedro.data.raw import detect_source
    from compcars_kedro.pipelines.data_engineering.nodes import (
        crop_images,
        parse_raw,
        split_dataset,
        validate_images,
    )

    raw = detect_source(tiny_sample)
    valid, _, _ = validate_images(parse_raw(raw), raw, TINY_DE_PARAMS)
    images, pairs, _, _ = split_dataset(valid, TINY_DE_PARAMS)
    return crop_images(images, raw, TINY_DE_PARAMS), pairs


def tiny_finetuning_params(**overrides) -> dict:
    """Finetuning parameters for a seconds-long CPU run on the tiny sample."""
    params = {
        "model": "resnet18", "loss": "multisimilarity", "views": "front+rear",
        "embedding_dim": 16,
        "models": {"resnet18": {"image_size": 32},
                   "vitb32": {"image_size": 32, "arch": {"patch_size": 16, "num_layers": 2,
                                                         "num_heads": 2, "hidden_dim": 32,
                                                         "mlp_dim": 64}}},
        "losses": {},
        "training": {"epochs": 2, "batch_size": 8, "num_workers": 0, "seed": 0,
                     "sampler": {"m_per_class": 2}},
        "finetuning": {"resume": False, "work_dir": "work"},
    }
    for key, value in overrides.items():
        params[key] = value
    return params


#: conf/local/parameters.yml of end-to-end project copies: seconds-long CPU runs on TINY.
TINY_LOCAL_PARAMETERS = """
data_engineering:
  min_images_per_class_per_view: 3
  unseen_fraction: 0.34
  num_workers: 1
  crop: {size: 32, num_workers: 1}
embedding_dim: 16
models:
  resnet18: {image_size: 32}
training:
  epochs: 2
  batch_size: 8
  sampler: {m_per_class: 2}
clustering:
  reducers: [pca]
  reducer_params: {pca: {n_components: 8}}
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_sample: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """One real ``kedro run`` (the default pipeline) of a project copy on the tiny sample."""
    project = make_project_copy(tmp_path_factory.mktemp("e2e") / "project", tiny_sample,
                                {"parameters.yml": TINY_LOCAL_PARAMETERS})
    result = kedro_cli(project, "run")
    return project, result


def latest(project: Path, rel: str) -> Path:
    """Path of the newest version of a versioned dataset ``rel`` (e.g. 08_reporting/x.csv)."""
    base = project / "data" / rel
    versions = sorted(p for p in base.iterdir() if p.is_dir())
    assert versions, f"no version of {rel}"
    return versions[-1] / base.name
