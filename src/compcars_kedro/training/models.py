"""Model registry, backbones + heads + multi-view fusion.

One :data:`MODEL_REGISTRY` entry per backbone carries everything about it: how to build it
(:mod:`.backbones`, :mod:`.clip`), its input normalisation, its architecture keys and defaults
and its torchvision name (the weights enum of ``model.weights``, also read by the weights
preflight and ``make weights``).  :class:`ModelConfig` is validated against it.

All models take float images in ``[0, 1]`` shaped ``(B, V, 3, S, S)`` and normalise internally
(ImageNet constants for torchvision models, CLIP's own for ``clip``).  The shared backbone embeds
every view; the fused representation is the CONCATENATION of the per-view embeddings
``(B, V * D)``.  :meth:`EmbeddingModel.embed` returns what retrieval / clustering use:

* ``head="metric"``: L2-normalised (optional) projection of the fused features
  (``embedding_dim`` or ``V * D`` dims);
* ``head="classification"``: L2-normalised fused features (``V * D`` dims); the logits come from
  a Linear layer over the fused features.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from .backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIT_B32_ARCH,
    TorchvisionResNet,
    TorchvisionViT,
    load_torchvision,
)
from .clip import (
    CLIP_B32_ARCH,
    CLIP_MEAN,
    CLIP_STD,
    ClipBackbone,
    apply_clip_phase,
    build_clip_backbone,
)
from .config import ClipOptions, StrictModel

# --------------------------------------------------------------------------- config


class ModelConfig(StrictModel):
    """Backbone, weights, input and head."""

    name: str = "resnet50"
    weights: str | None = None
    image_size: int = Field(224, ge=16)
    views: list[Literal["front", "rear"]] = Field(default_factory=lambda: ["front"])
    head: Literal["classification", "metric"] = "metric"
    embedding_dim: int | None = Field(None, ge=1)
    arch: dict[str, int] = Field(default_factory=dict)
    clip: ClipOptions = Field(default_factory=ClipOptions)

    @field_validator("views")
    @classmethod
    def _views(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(
                f"model.views must be a non-empty list of distinct views out of ['front', 'rear'], got {v}"
            )
        return v

    @model_validator(mode="after")
    def _registry(self) -> ModelConfig:
        spec = model_spec(self.name)
        bad = sorted(set(self.arch) - set(spec.arch_keys))
        if bad:
            raise ValueError(
                f"model.arch has unknown key(s) {bad} for model {self.name!r}; "
                f"valid keys: {sorted(spec.arch_keys)}"
            )
        patch = spec.patch_size(self.arch)
        if patch is not None and self.image_size % patch != 0:
            raise ValueError(
                f"model.image_size={self.image_size} must be a multiple of the patch size {patch} "
                f"of model {self.name!r}"
            )
        return self

    @property
    def num_views(self) -> int:
        """Number of views fused by concatenation."""
        return len(self.views)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """Registry entry of a backbone: how to build it, how to normalise its input, its
    architecture keys / defaults and its torchvision name (``None``: not a torchvision model)."""

    builder: Callable[[ModelConfig, ModelSpec, Mapping[str, Any] | None], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    arch_keys: tuple[str, ...] = ()
    default_arch: Mapping[str, int] = field(default_factory=dict)
    torchvision_name: str | None = None

    def patch_size(self, arch: Mapping[str, int]) -> int | None:
        """Patch size of transformer models (image_size must be a multiple), else None."""
        if "patch_size" not in self.default_arch:
            return None
        return int(arch.get("patch_size", self.default_arch["patch_size"]))


def _resnet(cfg: ModelConfig, spec: ModelSpec, clip_config: Mapping[str, Any] | None) -> nn.Module:
    from torchvision.models import get_model_builder

    name = str(spec.torchvision_name)
    return load_torchvision(
        TorchvisionResNet(get_model_builder(name)), cfg.weights, name, drop=("fc.",)
    )


def _vit(cfg: ModelConfig, spec: ModelSpec, clip_config: Mapping[str, Any] | None) -> nn.Module:
    backbone = TorchvisionViT(cfg.image_size, {**spec.default_arch, **cfg.arch})
    return load_torchvision(backbone, cfg.weights, str(spec.torchvision_name), drop=("heads.",))


def _clip(cfg: ModelConfig, spec: ModelSpec, clip_config: Mapping[str, Any] | None) -> nn.Module:
    return build_clip_backbone(cfg.weights, cfg.arch, cfg.image_size, clip_config)


MODEL_REGISTRY: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(_resnet, IMAGENET_MEAN, IMAGENET_STD, torchvision_name="resnet50"),
    "resnet18": ModelSpec(_resnet, IMAGENET_MEAN, IMAGENET_STD, torchvision_name="resnet18"),
    "vitb32": ModelSpec(
        _vit, IMAGENET_MEAN, IMAGENET_STD, tuple(VIT_B32_ARCH), VIT_B32_ARCH,
        torchvision_name="vit_b_32",
    ),
    "clip": ModelSpec(_clip, CLIP_MEAN, CLIP_STD, tuple(CLIP_B32_ARCH), CLIP_B32_ARCH),
}


def model_spec(name: str, key: str = "model.name") -> ModelSpec:
    """The :data:`MODEL_REGISTRY` entry of ``name``; an unknown name names ``key`` and the
    valid names."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"{key}={name!r} is unknown; valid names: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def torchvision_name(model: str) -> str | None:
    """torchvision model name of registry model ``model`` (``None``: unknown or not torchvision)."""
    spec = MODEL_REGISTRY.get(model)
    return spec.torchvision_name if spec is not None else None


# --------------------------------------------------------------------------- full model


class EmbeddingModel(nn.Module):
    """Shared backbone over views + concatenation fusion + classification / metric head."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_views: int,
        head: str,
        num_classes: int,
        embedding_dim: int | None,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self.num_views = int(num_views)
        self.head_type = head
        self.fused_dim = self.num_views * int(backbone.out_dim)
        self.classifier: nn.Linear | None = None
        self.projection: nn.Linear | None = None
        if head == "classification":
            self.classifier = nn.Linear(self.fused_dim, num_classes)
            self.embedding_dim = self.fused_dim
        else:
            if embedding_dim is not None:
                self.projection = nn.Linear(self.fused_dim, embedding_dim)
            self.embedding_dim = int(embedding_dim or self.fused_dim)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.channels_last = False

    @property
    def is_clip(self) -> bool:
        """Whether the backbone is a CLIP model (has a text tower)."""
        return isinstance(self.backbone, ClipBackbone)

    def view_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-view backbone embeddings ``(B, V, D)`` of float images ``(B, V, 3, S, S)`` in [0, 1]."""
        if x.dim() != 5 or x.shape[1] != self.num_views or x.shape[2] != 3:
            raise ValueError(
                f"expected images (B, {self.num_views}, 3, S, S), got {tuple(x.shape)}"
            )
        b, v = x.shape[:2]
        flat = (x.flatten(0, 1) - self.pixel_mean) / self.pixel_std
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(flat)
        return feats.reshape(b, v, -1)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """``dict(embedding, logits, view_features[, logit_scale])``; ``embedding`` = :meth:`embed`."""
        vf = self.view_features(x)
        fused = vf.flatten(1)
        logits = None
        if self.classifier is not None:
            logits = self.classifier(fused)
            z = fused
        else:
            z = self.projection(fused) if self.projection is not None else fused
        out: dict[str, Any] = {
            "embedding": F.normalize(z.float(), dim=-1),
            "logits": logits,
            "view_features": vf,
        }
        if self.is_clip:
            out["logit_scale"] = self.backbone.clip.logit_scale
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised retrieval / clustering embedding ``(B, embedding_dim)`` (float32)."""
        return self.forward(x)["embedding"]

    def backbone_only(self) -> EmbeddingModel:
        """The same backbone (shared modules) without projection or classifier.

        Its :meth:`embed` is the L2-normalised fused (concatenated) backbone features: the
        baseline embedding, identical for every loss trained from the same backbone, views,
        weights and seed (a head at initialisation is never the baseline).
        """
        model = EmbeddingModel(
            self.backbone,
            num_views=self.num_views,
            head="metric",
            num_classes=1,
            embedding_dim=None,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            image_size=self.image_size,
        )
        model.pixel_mean, model.pixel_std = self.pixel_mean, self.pixel_std
        model.channels_last = self.channels_last
        return model

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """L2-normalised CLIP text embedding ``(B, projection_dim)`` (``clip`` only)."""
        if not self.is_clip:
            raise TypeError("encode_text() needs model.name='clip'")
        return F.normalize(self.backbone.encode_text(input_ids, attention_mask).float(), dim=-1)


def build_model(
    model_cfg: ModelConfig,
    num_classes: int,
    *,
    load_weights: bool = True,
    clip_config: Mapping[str, Any] | None = None,
) -> EmbeddingModel:
    """Build the model of ``model_cfg`` (random init, or ``model.weights`` loaded offline).

    ``load_weights=False`` skips ``model.weights`` (use it before loading a fine-tuned
    checkpoint); for CLIP pass the checkpoint's ``meta["clip_config"]`` as ``clip_config`` so the
    architecture is known without the pretrained files (see :func:`model_from_checkpoint`).
    """
    if model_cfg.head == "classification" and model_cfg.embedding_dim is not None:
        raise ValueError(
            "model.embedding_dim is only used with model.head='metric'; set it to null for the "
            "classification head"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    spec = MODEL_REGISTRY[model_cfg.name]
    cfg = model_cfg if load_weights else model_cfg.model_copy(update={"weights": None})
    backbone = spec.builder(cfg, spec, clip_config if model_cfg.name == "clip" else None)
    model = EmbeddingModel(
        backbone,
        num_views=model_cfg.num_views,
        head=model_cfg.head,
        num_classes=num_classes,
        embedding_dim=model_cfg.embedding_dim,
        mean=spec.mean,
        std=spec.std,
        image_size=model_cfg.image_size,
    )
    if model.is_clip:
        apply_clip_phase(model, model_cfg.clip)
    return model


# --------------------------------------------------------------------------- optimizer groups

_NO_DECAY_NAME_PARTS = ("pos_embedding", "position_embedding", "class_token", "class_embedding")


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.endswith(".bias") or any(s in name for s in _NO_DECAY_NAME_PARTS)


def _is_head_param(name: str) -> bool:
    return not name.startswith("backbone.") or name.startswith(
        (
            "backbone.clip.visual_projection.",
            "backbone.clip.text_projection.",
            "backbone.clip.logit_scale",
        )
    )


def param_groups(
    model: EmbeddingModel,
    loss_module: nn.Module | None = None,
    *,
    lr_backbone: float | None = None,
    lr_head: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: backbone vs head (+ CLIP projections / logit scale + loss).

    Each group has a ``name`` (``backbone``, ``backbone_no_decay``, ``head``, ``head_no_decay``)
    and, when given, its ``lr``; norms, biases, 1-d parameters and positional / class
    embeddings get ``weight_decay=0``. Frozen parameters are skipped, empty groups dropped.
    """
    buckets: dict[str, list[torch.Tensor]] = {
        "backbone": [],
        "backbone_no_decay": [],
        "head": [],
        "head_no_decay": [],
    }
    named = [(n, p) for n, p in model.named_parameters()]
    if loss_module is not None:
        named += [(f"loss.{n}", p) for n, p in loss_module.named_parameters()]
    seen: set[int] = set()
    for name, p in named:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        base = "head" if _is_head_param(name) else "backbone"
        key = f"{base}_no_decay" if _no_decay(name, p) else base
        buckets[key].append(p)
    groups = []
    for key, params in buckets.items():
        if not params:
            continue
        group: dict[str, Any] = {
            "name": key,
            "params": params,
            "weight_decay": 0.0 if key.endswith("no_decay") else weight_decay,
        }
        lr = lr_head if key.startswith("head") else lr_backbone
        if lr is not None:
            group["lr"] = lr
        groups.append(group)
    return groups
