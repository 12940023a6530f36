"""Impossible parameter values (inf/nan, non-positive rates, sizes, fractions) fail before any
node runs, naming the key."""

from __future__ import annotations

import pytest

from compcars_kedro.params import validate_parameters

FT = {"model": "resnet18", "loss": "ce"}


@pytest.mark.parametrize("training, key", [
    ({"lr_backbone": "inf"}, "training.lr_backbone"),  # as given by --params on the CLI
    ({"lr_backbone": float("inf")}, "training.lr_backbone"),
    ({"lr_head": float("nan")}, "training.lr_head"),
    ({"lr_head": -1e-3}, "training.lr_head"),
    ({"lr_backbone": 0}, "training.lr_backbone"),
    ({"weight_decay": float("inf")}, "training.weight_decay"),
    ({"batch_size": 0}, "training.batch_size"),
    ({"epochs": 0}, "training.epochs"),
    ({"warmup_fraction": 1.5}, "training.warmup_fraction"),
    ({"grad_clip": float("nan")}, "training.grad_clip"),
])
def test_impossible_training_values_are_named(training: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_parameters({**FT, "training": training}, check_weights=False)


@pytest.mark.parametrize("section, key", [
    ({"val_fraction": float("nan")}, "data_engineering.val_fraction"),
    ({"crop": {"margin": float("inf")}}, "data_engineering.crop.margin"),
    ({"crop": {"size": 0}}, "data_engineering.crop.size"),
    ({"max_pixels": 0}, "data_engineering.max_pixels"),
    ({"bbox_tolerance": float("inf")}, "data_engineering.bbox_tolerance"),
])
def test_impossible_data_engineering_values_are_named(section: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_parameters({"data_engineering": section})


def test_impossible_loss_values_are_named() -> None:
    with pytest.raises(ValueError, match="neg_margin"):
        validate_parameters({**FT, "loss": "contrastive",
                             "losses": {"contrastive": {"pos_margin": 0.5, "neg_margin": 0.2}}},
                            check_weights=False)
    with pytest.raises(ValueError, match=r"losses\.arcface\..*scale"):
        validate_parameters({**FT, "loss": "arcface", "losses": {"arcface": {"scale": "nan"}}},
                            check_weights=False)
