"""Every LOSS_REGISTRY / MINERS / MODEL_REGISTRY entry builds from conf/base's defaults, and
conf/base names exactly the registries' entries (adding one = a registry entry + its defaults)."""

from __future__ import annotations

import ast
import math

import pytest
import torch
import yaml

from compcars_kedro.params import model_settings
from compcars_kedro.training import (
    LOSS_REGISTRY,
    MINERS,
    MODEL_REGISTRY,
    LossConfig,
    ModelConfig,
    build_loss,
    build_model,
)
from compcars_kedro.training.models import torchvision_name
from tests.conftest import ROOT

SRC = ROOT / "src" / "compcars_kedro"
FINETUNING = yaml.safe_load((ROOT / "conf" / "base" / "parameters_finetuning.yml").read_text())
NUM_CLASSES, DIM, BATCH = 3, 8, 12


def _yaml_miners() -> set[str]:
    names = set()
    for params in FINETUNING["losses"].values():
        miner = (params or {}).get("miner")
        if isinstance(miner, dict):
            names.add(miner["name"])
        elif miner not in (None, "none"):
            names.add(miner)
    return names


def test_conf_base_names_exactly_the_registry_entries() -> None:
    assert set(FINETUNING["losses"]) == set(LOSS_REGISTRY)
    assert set(FINETUNING["models"]) == set(MODEL_REGISTRY)
    assert FINETUNING["loss"] in LOSS_REGISTRY and FINETUNING["model"] in MODEL_REGISTRY
    assert _yaml_miners() <= set(MINERS)
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["vars"][0]
    assert set(dvc["losses"]) <= set(LOSS_REGISTRY) and set(dvc["models"]) <= set(MODEL_REGISTRY)


def _outputs(embedding_size: int) -> dict:
    torch.manual_seed(0)
    return {
        "embedding": torch.nn.functional.normalize(torch.randn(BATCH, embedding_size), dim=-1),
        "logits": torch.randn(BATCH, NUM_CLASSES),
        "view_features": torch.randn(BATCH, 1, embedding_size),
        "text_embedding": torch.randn(BATCH, embedding_size),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }


@pytest.mark.parametrize("name", sorted(LOSS_REGISTRY))
def test_every_loss_builds_from_conf_base_defaults(name: str) -> None:
    cfg = LossConfig.model_validate({"name": name, **(FINETUNING["losses"][name] or {})})
    spec = LOSS_REGISTRY[name]
    assert set(cfg.params) == set(spec.params.model_fields)  # every parameter has its default
    module = build_loss(cfg, num_classes=NUM_CLASSES, embedding_size=DIM)
    labels = torch.arange(BATCH) % NUM_CLASSES
    with torch.no_grad():
        value = module(_outputs(DIM), labels)
    assert value.ndim == 0 and math.isfinite(value.item())
    miner = cfg.hparams.miner if "miner" in spec.params.model_fields else None
    assert (getattr(module, "miner", None) is not None) == (miner is not None)


@pytest.mark.parametrize("name", sorted(MINERS))
def test_every_miner_builds_from_its_defaults(name: str) -> None:
    miner = MINERS[name].build({})
    emb = torch.nn.functional.normalize(_outputs(DIM)["embedding"], dim=-1)
    mined = miner(emb, torch.arange(BATCH) % NUM_CLASSES)
    assert isinstance(mined, tuple) and all(isinstance(t, torch.Tensor) for t in mined)


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_model_builds_from_conf_base_defaults(name: str) -> None:
    """conf/base's sample settings (random init, 64 px, tiny ViT / CLIP) build and embed."""
    settings = model_settings(name, FINETUNING["models"])
    assert settings.get("weights") is None  # nothing to download
    cfg = ModelConfig.model_validate({"name": name, **settings})
    model = build_model(cfg, NUM_CLASSES).eval()
    with torch.no_grad():
        emb = model.embed(torch.rand(1, cfg.num_views, 3, cfg.image_size, cfg.image_size))
    assert emb.shape == (1, model.embedding_dim)


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_torchvision_names_come_from_the_registry(name: str) -> None:
    from torchvision.models import get_model_weights

    from compcars_kedro.weights import weights_to_fetch

    tv = torchvision_name(name)
    assert tv == MODEL_REGISTRY[name].torchvision_name
    items = weights_to_fetch({"models": {name: {"weights": "DEFAULT"}}})
    if tv is None:
        assert [i.kind for i in items] == ["hf"]
    else:
        get_model_weights(tv)  # a torchvision model with a weights enum
        assert [(i.kind, i.model) for i in items] == [("torchvision", tv)]


def test_training_config_imports_no_registry() -> None:
    """config.py is below the registries: losses / models / miners import it, never back."""
    tree = ast.parse((SRC / "training" / "config.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not {m for m in imported if m and m.split(".")[-1] in ("losses", "models", "miners")}
