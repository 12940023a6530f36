"""Config validation: unknown keys, registries, loss params, combinations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from compcars_kedro.training import (
    LOSS_REGISTRY,
    MODEL_REGISTRY,
    LossConfig,
    ModelConfig,
    TrainingConfig,
    validate_combination,
)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ValidationError, match="embeding_dim"):
        ModelConfig.model_validate({"name": "resnet18", "embeding_dim": 128})
    with pytest.raises(ValidationError, match="lr_bakbone"):
        TrainingConfig.model_validate({"lr_bakbone": 1e-4})
    with pytest.raises(ValidationError, match="patiense"):
        TrainingConfig.model_validate({"early_stopping": {"patiense": 3}})


def test_grad_clip_validation() -> None:
    for bad in (0, 0.0, -1.0):
        with pytest.raises(ValidationError, match="grad_clip"):
            TrainingConfig(grad_clip=bad)
    assert TrainingConfig(grad_clip=None).grad_clip is None
    assert TrainingConfig(grad_clip=2.5).grad_clip == 2.5


def test_registries_reject_unknown_names_with_valid_list() -> None:
    with pytest.raises(ValidationError) as exc:
        ModelConfig(name="resnet51")
    assert "model.name='resnet51' is unknown" in str(exc.value)
    for name in MODEL_REGISTRY:
        assert name in str(exc.value)
    with pytest.raises(ValidationError) as exc:
        LossConfig(name="cosface")
    assert "loss.name='cosface' is unknown" in str(exc.value)
    for name in LOSS_REGISTRY:
        assert name in str(exc.value)
    # the registries' names = conf/base's keys: tests/training/test_registries.py


def test_loss_params_flat_nested_defaults_and_foreign_params() -> None:
    flat = LossConfig.model_validate({"name": "triplet", "margin": 0.2})
    nested = LossConfig.model_validate({"name": "triplet", "params": {"margin": 0.2}})
    assert flat == nested
    assert flat.params["margin"] == 0.2
    assert flat.params["miner"]["args"]["type_of_triplets"] == "semihard"
    assert LossConfig(name="arcface").hparams.scale == 64.0
    with pytest.raises(ValidationError, match="temperature"):
        LossConfig.model_validate({"name": "triplet", "temperature": 0.1})
    bad_triplets = {"name": "triplet_margin", "args": {"type_of_triplets": "medium"}}
    with pytest.raises(ValidationError, match="type_of_triplets"):
        LossConfig.model_validate({"name": "triplet", "miner": bad_triplets})


def test_miner_forms_and_errors() -> None:
    """``{name, args}`` (args default to the miner's), a bare name, or none / null."""
    bare = LossConfig(name="contrastive", miner="pair_margin").params["miner"]
    full = LossConfig(name="contrastive", miner={"name": "pair_margin", "args": {}}).params["miner"]
    assert bare == full == {"name": "pair_margin", "args": {"pos_margin": 0.2, "neg_margin": 0.8}}
    for none in ("none", None):
        assert LossConfig(name="contrastive", miner=none).params["miner"] is None
        assert LossConfig(name="multisimilarity", miner=none).hparams.miner is None
    with pytest.raises(ValidationError, match=r"miner.name='hardest' is unknown.*pair_margin"):
        LossConfig(name="contrastive", miner="hardest")
    with pytest.raises(ValidationError, match=r"unknown argument\(s\) \['margin'\].*pos_margin"):
        LossConfig(name="contrastive", miner={"name": "pair_margin", "args": {"margin": 0.1}})


def test_model_arch_and_views_validation() -> None:
    with pytest.raises(ValidationError, match="num_layer"):
        ModelConfig(name="vitb32", image_size=64, arch={"num_layer": 2})
    with pytest.raises(ValidationError, match="multiple of the patch size"):
        ModelConfig(name="vitb32", image_size=50)
    assert ModelConfig(name="vitb32", image_size=64).image_size == 64
    with pytest.raises(ValidationError, match="views"):
        ModelConfig(name="resnet18", views=["front", "front"])
    with pytest.raises(ValidationError):
        ModelConfig(name="resnet18", views=["side"])


def test_warmup_options() -> None:
    assert TrainingConfig(warmup_steps=7).resolve_warmup_steps(100) == 7
    assert TrainingConfig(warmup_fraction=0.1).resolve_warmup_steps(100) == 10
    with pytest.raises(ValidationError, match="only one"):
        TrainingConfig(warmup_steps=3, warmup_fraction=0.1)


def test_combinations() -> None:
    metric = ModelConfig(name="resnet18", head="metric")
    cls = ModelConfig(name="resnet18", head="classification")
    validate_combination(cls, LossConfig(name="ce"))
    validate_combination(metric, LossConfig(name="arcface"))
    with pytest.raises(ValueError, match="model.head='classification'"):
        validate_combination(metric, LossConfig(name="ce"))
    with pytest.raises(ValueError, match="model.head='metric'"):
        validate_combination(cls, LossConfig(name="triplet"))
    with pytest.raises(ValueError, match="model.name='clip'"):
        validate_combination(metric, LossConfig(name="clip"))
    clip_proj = ModelConfig(name="clip", head="metric", embedding_dim=64)
    with pytest.raises(ValueError, match="embedding_dim"):
        validate_combination(clip_proj, LossConfig(name="clip"))
    text_phase = ModelConfig(name="clip", clip={"phase": "text"})
    with pytest.raises(ValueError, match="phase"):
        validate_combination(text_phase, LossConfig(name="triplet"))
    with pytest.raises(ValueError, match="m_per_class"):
        validate_combination(
            metric,
            LossConfig(name="triplet"),
            TrainingConfig(batch_size=10, sampler={"m_per_class": 4}),
        )
