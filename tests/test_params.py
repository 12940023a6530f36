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


# --------------------------------------------------------------------------- real configuration
def _compcars(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **runtime) -> dict:
    monkeypatch.setenv("COMPCARS_ROOT", str(tmp_path))
    return dict(_loader("compcars", runtime_params=runtime or None)["parameters"])


def test_compcars_env_does_not_inherit_the_sample_architectures(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from compcars_kedro.params import FinetuningParams
    from compcars_kedro.validation import validate

    params = _compcars(monkeypatch, tmp_path)
    assert _loader()["parameters"]["models"]["clip"]["arch"]  # the sample's tiny CLIP (base)
    for model in ("vitb32", "clip"):
        assert params["models"][model].get("arch") is None
        config = validate(FinetuningParams, {**{k: params[k] for k in (
            "embedding_dim", "models", "losses", "training", "finetuning")},
            "model": model, "loss": "ce", "views": "front"}, "parameters").resolve()
        assert config["model"]["arch"] == {} and config["model"]["image_size"] == 224


def test_arch_with_pretrained_weights_is_rejected_before_any_node(tmp_path: Path) -> None:
    base = dict(_loader(runtime_params={"model": "clip", "loss": "clip", "views": "front",
                                        "models": {"clip": {"weights": str(tmp_path)}}})[
        "parameters"])
    with pytest.raises(ValueError, match=r"models\.clip\.arch=.*cannot be combined with "
                                         r"models\.clip\.weights.*models\.clip\.arch=null"):
        validate_parameters(base, check_weights=False)
    cleared = dict(_loader(runtime_params={
        "model": "clip", "loss": "clip", "views": "front",
        "models": {"clip": {"weights": str(tmp_path), "arch": None}}})["parameters"])
    validate_parameters(cleared, check_weights=False)
    vit = dict(_loader(runtime_params={"model": "vitb32", "loss": "ce",
                                       "models": {"vitb32": {"weights": "IMAGENET1K_V1"}}})[
        "parameters"])
    with pytest.raises(ValueError, match=r"models\.vitb32\.arch"):
        validate_parameters(vit, check_weights=False)
    # a state-dict file needs `arch` to describe what it was saved from: allowed
    f = tmp_path / "tiny_vit.safetensors"
    save_file({"x": torch.zeros(1)}, str(f))
    ok = dict(_loader(runtime_params={"model": "vitb32", "loss": "ce",
                                      "models": {"vitb32": {"weights": str(f)}}})["parameters"])
    validate_parameters(ok, check_weights=False)


def test_every_compcars_grid_and_clip_layers_variant_validates(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from compcars_kedro.grid import expand_clip_layers, expand_grid
    from compcars_kedro.params import check_combination
    from compcars_kedro.pipelines.grid.nodes import variant_config

    params = _compcars(monkeypatch, tmp_path)
    variants = expand_grid(params["grid"]) + expand_clip_layers(params["clip_layers"])
    assert {v.model for v in variants} == {"resnet50", "vitb32", "clip"}
    layers = {(v.extra["component"], v.extra["trainable_layers"]) for v in variants
              if v.study == "clip_layers"}
    assert {(c, n) for c in ("vision", "text") for n in range(1, 13)} <= layers
    for variant in variants:
        config = variant_config(variant, params["embedding_dim"], params["models"],
                                params["losses"], params["training"], params["finetuning"])
        check_combination(config)
        assert config["model"]["arch"] == {} and config["model"]["image_size"] == 224
        assert config["model"]["weights"] == params["models"][variant.model]["weights"]


def test_clip_loss_resolves_embedding_dim_to_the_joint_space() -> None:
    params = dict(_loader(runtime_params={"model": "clip", "loss": "clip", "views": "front"})[
        "parameters"])
    assert params["embedding_dim"] == 128  # the sample's metric-head default
    validate_parameters(params)  # the README command; formerly failed inside the node
    from compcars_kedro.pipelines.finetuning.nodes import resolve_config

    config = resolve_config(*(params[k] for k in (
        "model", "loss", "views", "embedding_dim", "models", "losses", "training", "finetuning")))
    assert config["model"]["embedding_dim"] is None


def test_pre_run_validation_rejects_impossible_combinations() -> None:
    params = dict(_loader(runtime_params={
        "model": "clip", "loss": "arcface", "views": "front",
        "models": {"clip": {"clip": {"phase": "text"}}}})["parameters"])
    with pytest.raises(ValueError, match="phase='text'"):
        validate_parameters(params)


def test_unknown_top_level_keys_fail_with_a_suggestion() -> None:
    from compcars_kedro.params import base_parameter_keys

    known = base_parameter_keys(ROOT / "conf")
    assert {"model", "training", "grid", "clip_layers", "reporting"} <= known
    params = dict(_loader(runtime_params={"modle": "vitb32"})["parameters"])
    with pytest.raises(ValueError, match=r"modle: unknown top-level parameter; did you mean "
                                         r"'model'\?"):
        validate_parameters(params, known_keys=known)
    validate_parameters(dict(_loader(runtime_params={"raw_path": "x"})["parameters"]),
                        known_keys=known)
    with pytest.raises(ValueError, match="raw_path=3 must be a path"):
        validate_parameters({"raw_path": 3}, known_keys=known)


def test_dedup_parameters_are_validated() -> None:
    from compcars_kedro.params import DataEngineeringParams
    from compcars_kedro.validation import validate

    p = validate(DataEngineeringParams, {"dedup": {"hash_size": 8, "max_distance": 6}},
                 "data_engineering")
    assert p.dedup.method == "phash" and p.dedup.hash_size == 8
    with pytest.raises(ValueError, match="data_engineering.dedup.method"):
        validate(DataEngineeringParams, {"dedup": {"method": "md5"}}, "data_engineering")
    with pytest.raises(ValueError, match="max_distance"):
        validate(DataEngineeringParams, {"dedup": {"hash_size": 8, "max_distance": 40}},
                 "data_engineering")


@pytest.mark.slow
def test_pipeline_before_its_upstream_data_says_what_to_run(project_copy: Path) -> None:
    """`--pipelines finetuning` on a fresh project: fails before any node, naming the pipeline
    that produces the missing inputs (not Kedro's VersionNotFoundError for `crops`)."""
    result = kedro_cli(project_copy, "run", "--pipelines", "finetuning")
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "crops: never produced; run `kedro run --pipelines data_engineering` first" in out
    assert "multiview_samples" in out and "VersionNotFoundError" not in out
    assert not any((project_copy / "data" / "06_models").iterdir())
