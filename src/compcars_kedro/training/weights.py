"""Offline resolution of ``model.weights``.

``model.weights`` can be

* ``None``: random initialisation;
* a torchvision weights enum name, short (``"IMAGENET1K_V2"``, ``"DEFAULT"``) or qualified
  (``"ResNet50_Weights.IMAGENET1K_V2"``): loaded from the ``TORCH_HOME`` hub cache only;
* a Hugging Face model id (``"openai/clip-vit-base-patch32"``, CLIP only): loaded with
  ``local_files_only=True``;
* a local path: a ``.safetensors`` state dict, a ``.pt``/``.pth`` state dict (read with
  ``torch.load(weights_only=True)``) or a ``save_pretrained`` folder (CLIP).

Nothing is ever downloaded here; when the weights are not available offline a
:class:`WeightsNotAvailableError` names the parameter to change and the download command
(``make weights``, :mod:`compcars_kedro.weights`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

logger = logging.getLogger(__name__)

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


#: How to get pretrained weights into the caches (every offline "not available" error says it).
FETCH_HINT = ("download them first with `make weights ENV=<env>` "
              "(python -m compcars_kedro.weights --env <env>)")


class WeightsNotAvailableError(RuntimeError):
    """``model.weights`` cannot be loaded offline."""


@dataclass(frozen=True)
class WeightsSource:
    """Where ``model.weights`` points to."""

    kind: Literal["none", "torchvision", "hf", "file", "folder"]
    value: str | None = None


def classify_weights(weights: str | None, *, torchvision_model: str | None) -> WeightsSource:
    """Decide what kind of source ``weights`` is (without loading anything)."""
    if weights is None or str(weights).strip().lower() in ("", "none", "null", "random"):
        return WeightsSource("none")
    w = str(weights)
    path = Path(w).expanduser()
    if path.is_file():
        return WeightsSource("file", str(path))
    if path.is_dir():
        return WeightsSource("folder", str(path))
    if w.lower().endswith(STATE_DICT_SUFFIXES) or w.startswith((".", "/", "~")):
        raise WeightsNotAvailableError(
            f"model.weights={w!r}: file not found; set model.weights to an existing local file "
            "(.safetensors/.pt/.pth), a folder, or null for random init"
        )
    if torchvision_model is not None:
        return WeightsSource("torchvision", w)
    return WeightsSource("hf", w)


def torch_hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (where torchvision caches downloaded weights)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_cache_file(model_name: str, weights: str) -> Path:
    """Cache file of a torchvision weights enum entry; raises when it is unknown or absent."""
    from torchvision.models import get_model_weights, get_weight

    enum_cls = get_model_weights(model_name)
    try:
        if "." in weights:
            entry = get_weight(weights)
            if not isinstance(entry, enum_cls):
                raise WeightsNotAvailableError(
                    f"model.weights={weights!r} are not weights of torchvision model {model_name!r}; "
                    f"valid: {[e.name for e in enum_cls]}"
                )
        else:
            entry = enum_cls[weights]
    except (KeyError, ValueError) as exc:
        raise WeightsNotAvailableError(
            f"model.weights={weights!r} is neither a local file nor a torchvision weights name of "
            f"{model_name!r} (valid: {[e.name for e in enum_cls]} or '{enum_cls.__name__}.<NAME>')"
        ) from exc
    cache_file = torch_hub_checkpoint_dir() / os.path.basename(entry.url)
    if not cache_file.is_file():
        raise WeightsNotAvailableError(
            f"model.weights={weights!r} is not in the local cache ({enum_cls.__name__}."
            f"{entry.name} -> {cache_file}, TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}) "
            f"and nothing is downloaded during runs; {FETCH_HINT}, or set model.weights to a local "
            "file path or null for random init"
        )
    return cache_file


def load_torchvision_state_dict(model_name: str, weights: str) -> dict[str, torch.Tensor]:
    """State dict of a torchvision weights enum entry, from the local cache only."""
    cache_file = torchvision_cache_file(model_name, weights)
    logger.info("Loading torchvision weights %s of %s from %s", weights, model_name, cache_file)
    return torch.load(cache_file, map_location="cpu", weights_only=True)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pt/.pth/.bin`` (``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsNotAvailableError(
            f"model.weights={str(path)!r} does not contain a state dict (name -> tensor)"
        )
    return obj


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keep only the keys under ``prefix`` (stripped) when there are any, else return ``state``."""
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict(strict=True)`` with an error message that names ``model.weights``."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsNotAvailableError(
            f"model.weights={source!r} does not match the architecture (check model.name / model.arch "
            f"/ model.image_size): {exc}"
        ) from exc
