"""Parameter validation before any work: soft-merged config, bad keys named, weights preflight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kedro.config import OmegaConfigLoader
from safetensors.torch import save_file

from compcars_kedro import settings
from compcars_kedro.params import check_weights_available, validate_parameters
from tests.conftest import ROOT, kedro_cli


def _loader(env: str = "local", runtime_params: dict | None = None) -> OmegaConfigLoader:
    args = dict(settings.CONFIG_LOADER_ARGS)
    args.pop("default_run_env")
    return OmegaConfigLoader(str(ROOT / "conf"), env=env, runtime_params=runtime_params, **args)


def test_base_and_compcars_parameters_validate(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    validate_parameters(dict(_loader()["parameters"]))
    monkeypatch.setenv("COMPCARS_ROOT", str(tmp_path))
    compcars = dict(_loader("compcars")["parameters"])
    assert compcars["models"]["resnet50"]["image_size"] == 224
    assert compcars["training"]["seed"] == 42  # soft merge kept base keys
    with pytest.raises(ValueError, match="models.resnet50.weights='IMAGENET1K_V2' is not in the local cache"):
        validate_parameters(compcars)  # pretrained weights are not downloaded


def test_runtime_override_keeps_sibling_keys() -> None:
    params = _loader(runtime_params={"training": {"lr_backbone": 1e-4}, "model": "vitb32"})[
        "parameters"]
    assert params["training"]["lr_backbone"] == 1e-4
    assert params["training"]["batch_size"] == 32 and params["model"] == "vitb32"


def test_weights_preflight_accepts_local_files_and_names_the_parameter(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    check_weights_available("resnet50", str(path))
    check_weights_available("resnet50", None)
    with pytest.raises(ValueError, match="models.vitb32.weights"):
        check_weights_available("vitb32", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="models.clip.weights='org/none'"):
        check_weights_available("clip", "org/none")
    with pytest.raises(ValueError, match="valid:"):
        check_weights_available("resnet50", "IMAGENET9K")


@pytest.mark.slow
def test_cli_rejects_bad_selector_before_any_work(project_copy: Path) -> None:
    result = kedro_cli(project_copy, "run", "--params", "model=vgg16,loss=arcface")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "model='vgg16' is unknown" in out and "resnet50" in out
    assert not any((project_copy / "data" / "02_intermediate").iterdir())  # nothing ran


@pytest.mark.slow
def test_data_engineering_runs_without_pretrained_weights(project_copy: Path) -> None:
    """The weights preflight only guards runs that train."""
    (project_copy / "conf" / "local" / "parameters.yml").write_text(
        "models:\n  resnet18: {weights: IMAGENET1K_V1}\n"
        "data_engineering: {min_images_per_class_per_view: 3, crop: {size: 24}}\n")
    ok = kedro_cli(project_copy, "run", "--pipelines", "data_engineering")
    assert ok.returncode == 0, ok.stderr[-2000:]
    refused = kedro_cli(project_copy, "run", "--pipelines", "finetuning")
    assert refused.returncode != 0
    out = " ".join((refused.stdout + refused.stderr).split())  # undo rich line wrapping
    assert "IMAGENET1K_V1" in out and "local cache" in out
    assert not (project_copy / "data" / "06_models" / "finetuned_checkpoint").exists()


def test_dedup_parameters_are_validated() -> None:
    from compcars_kedro.params import DataEngineeringParams, validate

    p = validate(DataEngineeringParams, {"dedup": {"hash_size": 8, "max_distance": 6}},
                 "data_engineering")
    assert p.dedup.method == "phash" and p.dedup.hash_size == 8
    with pytest.raises(ValueError, match="data_engineering.dedup.method"):
        validate(DataEngineeringParams, {"dedup": {"method": "md5"}}, "data_engineering")
    with pytest.raises(ValueError, match="max_distance"):
        validate(DataEngineeringParams, {"dedup": {"hash_size": 8, "max_distance": 40}},
                 "data_engineering")
