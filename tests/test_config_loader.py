"""raw_path precedence in every env: --params, $COMPCARS_ROOT, conf/local, the env's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from compcars_kedro import settings
from compcars_kedro.config_loader import ProjectConfigLoader


def _conf(tmp_path: Path, local: str | None) -> Path:
    conf = tmp_path / "conf"
    for env, text in (("base", "raw_path: data/01_raw/compcars_sample\n"),
                      ("compcars", "raw_path: data/01_raw/CompCars/data\n"),
                      ("dvc", "dvc_variant: {model: resnet18}\n")):
        (conf / env).mkdir(parents=True)
        (conf / env / "globals.yml").write_text(text)
    (conf / "base" / "catalog.yml").write_text(
        "compcars_raw:\n  type: compcars_kedro.datasets.RawImagesDataset\n"
        "  path: ${globals:raw_path}\n")
    (conf / "local").mkdir()
    if local is not None:
        (conf / "local" / "globals.yml").write_text(f"raw_path: {local}\n")
    return conf


def _raw_path(conf: Path, env: str, runtime: dict | None = None) -> str:
    args = dict(settings.CONFIG_LOADER_ARGS)
    args.pop("default_run_env")
    loader = ProjectConfigLoader(str(conf), env=env, runtime_params=runtime, **args)
    catalog_path = loader["catalog"]["compcars_raw"]["path"]
    assert catalog_path == loader["globals"]["raw_path"]  # what the catalog reads
    return catalog_path


@pytest.mark.parametrize("env", ["local", "compcars", "dvc"])
def test_raw_path_precedence_is_the_same_in_every_env(tmp_path: Path, env: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPCARS_ROOT", raising=False)
    default = {"local": "data/01_raw/compcars_sample", "compcars": "data/01_raw/CompCars/data",
               "dvc": "data/01_raw/compcars_sample"}[env]
    assert _raw_path(_conf(tmp_path / "a", None), env) == default
    conf = _conf(tmp_path / "b", "/srv/CompCars/data")
    assert _raw_path(conf, env) == "/srv/CompCars/data"  # conf/local, also under --env compcars
    monkeypatch.setenv("COMPCARS_ROOT", "/mnt/compcars")
    assert _raw_path(conf, env) == "/mnt/compcars"
    assert _raw_path(conf, env, {"raw_path": "/cli/raw"}) == "/cli/raw"


def test_project_settings_use_the_project_loader() -> None:
    assert settings.CONFIG_LOADER_CLASS is ProjectConfigLoader


def test_a_later_loader_does_not_hijack_the_globals(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """OmegaConf resolvers are global: building another loader (as pipeline registration does)
    must not change what this loader's `${globals:raw_path}` resolves to."""
    from kedro.config import OmegaConfigLoader

    monkeypatch.setenv("COMPCARS_ROOT", "/mnt/compcars")
    conf = _conf(tmp_path, None)
    args = dict(settings.CONFIG_LOADER_ARGS)
    args.pop("default_run_env")
    loader = ProjectConfigLoader(str(conf), env="compcars", **args)
    OmegaConfigLoader(str(conf), env="compcars", **args)  # registers its own `globals`
    assert loader["catalog"]["compcars_raw"]["path"] == "/mnt/compcars"
