"""Backbones, heads and multi-view fusion.

All models take float images in ``[0, 1]`` shaped ``(B, V, 3, S, S)`` and normalise internally
(ImageNet constants for torchvision models, CLIP's own for ``clip``).  The shared backbone embeds
every view; the fused representation is the CONCATENATION of the per-view embeddings
``(B, V * D)``.  :meth:`EmbeddingModel.embed` returns what retrieval / clustering use:

* ``head="metric"``: L2-normalised (optional) projection of the fused features
  (``embedding_dim`` or ``V * D`` dims);
* ``head="classification"``: L2-normalised fused features (``V * D`` dims); the logits come from
  a Linear layer over the fused features.

For ``clip`` the per-view embedding is the image tower + ``visual_projection`` output (the image
embedding never sees text); the text tower is only used by the ``clip`` loss through
:meth:`EmbeddingModel.encode_text`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClipOptions, ModelConfig
from .weights import (
    FETCH_HINT,
    WeightsNotAvailableError,
    classify_weights,
    load_into,
    load_state_dict_file,
    load_torchvision_state_dict,
    strip_prefix,
)

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VIT_B32_ARCH: dict[str, int] = {
    "patch_size": 32,
    "num_layers": 12,
    "num_heads": 12,
    "hidden_dim": 768,
    "mlp_dim": 3072,
}
CLIP_B32_ARCH: dict[str, int] = {
    "patch_size": 32,
    "vision_hidden_size": 768,
    "vision_intermediate_size": 3072,
    "vision_layers": 12,
    "vision_heads": 12,
    "text_hidden_size": 512,
    "text_intermediate_size": 2048,
    "text_layers": 12,
    "text_heads": 8,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "projection_dim": 512,
}
# special-token ids of the fallback BPE tokenizer (see tokenizer.py) used for small random-init vocabularies
BPE_PAD_ID, BPE_UNK_ID, BPE_BOS_ID, BPE_EOS_ID = 0, 1, 2, 3


# --------------------------------------------------------------------------- backbones


class TorchvisionResNet(nn.Module):
    """torchvision ResNet with ``fc = Identity``: global-average-pooled features."""

    def __init__(self, ctor: Callable[..., nn.Module]) -> None:
        super().__init__()
        net = ctor(weights=None)
        self.out_dim: int = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TorchvisionViT(nn.Module):
    """torchvision ``VisionTransformer`` (``heads = Identity``): class-token features."""

    def __init__(self, image_size: int, arch: Mapping[str, int]) -> None:
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer

        self.image_size = image_size
        self.patch_size = int(arch["patch_size"])
        net = VisionTransformer(
            image_size=image_size,
            patch_size=self.patch_size,
            num_layers=int(arch["num_layers"]),
            num_heads=int(arch["num_heads"]),
            hidden_dim=int(arch["hidden_dim"]),
            mlp_dim=int(arch["mlp_dim"]),
        )
        net.heads = nn.Identity()
        self.out_dim: int = int(arch["hidden_dim"])
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClipBackbone(nn.Module):
    """Hugging Face ``CLIPModel``; ``forward`` = image tower + ``visual_projection``."""

    def __init__(self, clip: nn.Module, image_size: int) -> None:
        super().__init__()
        self.clip = clip
        self.out_dim: int = int(clip.config.projection_dim)
        vision_size = clip.config.vision_config.image_size
        self.interpolate_pos_encoding = int(image_size) != int(vision_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.clip.vision_model(
            pixel_values=x, interpolate_pos_encoding=self.interpolate_pos_encoding
        )
        return self.clip.visual_projection(out.pooler_output)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Text tower + ``text_projection`` (un-normalised)."""
        out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.clip.text_projection(out.pooler_output)

    def set_eos_token_id(self, eos_token_id: int) -> None:
        """Make CLIP's text pooling pick the EOS position of *our* tokenizer.

        transformers pools the text at the first ``eos_token_id`` position (``argmax`` of the ids
        when the config says ``eos_token_id == 2``, a legacy path); setting the tokenizer's EOS id
        (never 2 here) selects the first-EOS path, which is correct for both tokenizers.
        """
        self.clip.config.text_config.eos_token_id = int(eos_token_id)
        for module in self.clip.text_model.modules():
            if hasattr(module, "eos_token_id"):
                module.eos_token_id = int(eos_token_id)
            cfg = getattr(module, "config", None)
            if cfg is not None and hasattr(cfg, "eos_token_id"):
                cfg.eos_token_id = int(eos_token_id)


# --------------------------------------------------------------------------- registry


def _build_resnet50(cfg: ModelConfig, clip_config: Mapping[str, Any] | None = None) -> nn.Module:
    from torchvision.models import resnet50

    return _load_torchvision(TorchvisionResNet(resnet50), cfg, "resnet50", drop=("fc.",))


def _build_resnet18(cfg: ModelConfig, clip_config: Mapping[str, Any] | None = None) -> nn.Module:
    from torchvision.models import resnet18

    return _load_torchvision(TorchvisionResNet(resnet18), cfg, "resnet18", drop=("fc.",))


def _build_vitb32(cfg: ModelConfig, clip_config: Mapping[str, Any] | None = None) -> nn.Module:
    arch = {**VIT_B32_ARCH, **cfg.arch}
    backbone = TorchvisionViT(cfg.image_size, arch)
    return _load_torchvision(backbone, cfg, "vit_b_32", drop=("heads.",))


def _build_clip(cfg: ModelConfig, clip_config: Mapping[str, Any] | None = None) -> nn.Module:
    """CLIP backbone; ``clip_config`` (a ``CLIPConfig.to_dict()``) builds an uninitialised model
    of that architecture (used when a checkpoint's weights are loaded afterwards)."""
    from transformers import CLIPConfig, CLIPModel

    if clip_config is not None:
        config = CLIPConfig.from_dict(dict(clip_config))
        return ClipBackbone(CLIPModel(config), cfg.image_size)
    src = classify_weights(cfg.weights, torchvision_model=None)
    if src.kind in ("hf", "folder"):
        if cfg.arch:
            raise ValueError(
                f"model.arch={cfg.arch} cannot be combined with model.weights={cfg.weights!r} "
                "(a pretrained Hugging Face CLIP defines its own architecture); remove model.arch"
            )
        try:
            clip = CLIPModel.from_pretrained(src.value, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsNotAvailableError(
                f"model.weights={cfg.weights!r} is not in the local Hugging Face cache "
                f"(HF_HOME={_env('HF_HOME')}) and nothing is downloaded during runs; "
                f"{FETCH_HINT}, or set model.weights to a local save_pretrained folder / "
                f".safetensors file, or null for random init ({exc})"
            ) from exc
        clip = clip.float()
        logger.info("Loaded CLIP weights from %s", src.value)
    else:
        arch = {**CLIP_B32_ARCH, **cfg.arch}
        small_vocab = arch["vocab_size"] < CLIP_B32_ARCH["vocab_size"]
        text_cfg: dict[str, Any] = {
            "vocab_size": arch["vocab_size"],
            "hidden_size": arch["text_hidden_size"],
            "intermediate_size": arch["text_intermediate_size"],
            "num_hidden_layers": arch["text_layers"],
            "num_attention_heads": arch["text_heads"],
            "max_position_embeddings": arch["max_position_embeddings"],
        }
        if small_vocab:
            text_cfg.update(
                pad_token_id=BPE_PAD_ID, bos_token_id=BPE_BOS_ID, eos_token_id=BPE_EOS_ID
            )
        vision_cfg = {
            "hidden_size": arch["vision_hidden_size"],
            "intermediate_size": arch["vision_intermediate_size"],
            "num_hidden_layers": arch["vision_layers"],
            "num_attention_heads": arch["vision_heads"],
            "image_size": cfg.image_size,
            "patch_size": arch["patch_size"],
        }
        config = CLIPConfig(
            text_config=text_cfg, vision_config=vision_cfg, projection_dim=arch["projection_dim"]
        )
        clip = CLIPModel(config)
        if src.kind == "file":
            state = load_state_dict_file(src.value)
            state = strip_prefix(strip_prefix(state, "backbone.clip."), "_orig_mod.")
            _drop_non_persistent(clip, state)
            load_into(clip, state, source=str(cfg.weights))
            logger.info("Loaded CLIP state dict from %s", src.value)
    return ClipBackbone(clip, cfg.image_size)


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "<unset>")


def _drop_non_persistent(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Remove buffers that the module does not persist (e.g. ``position_ids``) from ``state``."""
    expected = set(module.state_dict())
    for k in [k for k in state if k not in expected and k.endswith("position_ids")]:
        del state[k]


def _load_torchvision(
    backbone: nn.Module, cfg: ModelConfig, tv_name: str, *, drop: tuple[str, ...]
) -> nn.Module:
    """Load ``cfg.weights`` into ``backbone.net`` (torchvision cache or a local state dict)."""
    src = classify_weights(cfg.weights, torchvision_model=tv_name)
    if src.kind == "none":
        return backbone
    if src.kind == "folder":
        raise WeightsNotAvailableError(
            f"model.weights={cfg.weights!r} is a folder; torchvision models need a torchvision "
            "weights name or a .safetensors/.pt state dict file (or null for random init)"
        )
    if src.kind == "torchvision":
        state = load_torchvision_state_dict(tv_name, src.value)
    else:
        state = load_state_dict_file(src.value)
    for prefix in ("_orig_mod.", "module.", "backbone.net.", "net."):
        state = strip_prefix(state, prefix)
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    if isinstance(backbone, TorchvisionViT) and "encoder.pos_embedding" in state:
        expected = backbone.net.encoder.pos_embedding.shape
        if state["encoder.pos_embedding"].shape != expected:
            from torchvision.models.vision_transformer import interpolate_embeddings

            state = interpolate_embeddings(backbone.image_size, backbone.patch_size, state)
    load_into(backbone.net, state, source=str(cfg.weights))
    return backbone


@dataclass(frozen=True)
class ModelSpec:
    """Registry entry: how to build a backbone and how to normalise its input."""

    builder: Callable[..., nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    arch_keys: tuple[str, ...] = ()
    default_arch: Mapping[str, int] = field(default_factory=dict)

    def patch_size(self, arch: Mapping[str, int]) -> int | None:
        """Patch size of transformer models (image_size must be a multiple), else None."""
        if "patch_size" not in self.default_arch:
            return None
        return int(arch.get("patch_size", self.default_arch["patch_size"]))


MODEL_REGISTRY: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(_build_resnet50, IMAGENET_MEAN, IMAGENET_STD),
    "resnet18": ModelSpec(_build_resnet18, IMAGENET_MEAN, IMAGENET_STD),
    "vitb32": ModelSpec(
        _build_vitb32, IMAGENET_MEAN, IMAGENET_STD, tuple(VIT_B32_ARCH), VIT_B32_ARCH
    ),
    "clip": ModelSpec(_build_clip, CLIP_MEAN, CLIP_STD, tuple(CLIP_B32_ARCH), CLIP_B32_ARCH),
}


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
    backbone = spec.builder(cfg, clip_config if model_cfg.name == "clip" else None)
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


# --------------------------------------------------------------------------- CLIP phases


def clip_tower(model: EmbeddingModel, tower: str) -> tuple[nn.ModuleList, nn.Module, nn.Module]:
    """``(transformer blocks, final norm, projection)`` of the ``vision`` or ``text`` tower."""
    clip = model.backbone.clip
    if tower == "vision":
        return (
            clip.vision_model.encoder.layers,
            clip.vision_model.post_layernorm,
            clip.visual_projection,
        )
    return clip.text_model.encoder.layers, clip.text_model.final_layer_norm, clip.text_projection


def apply_clip_phase(model: EmbeddingModel, opts: ClipOptions) -> None:
    """Freeze everything of CLIP except what ``opts.phase`` / ``opts.trainable_layers`` train."""
    clip = model.backbone.clip
    clip.requires_grad_(False)
    if opts.phase in ("vision", "text"):
        layers, norm, proj = clip_tower(model, opts.phase)
        n = len(layers)
        if opts.trainable_layers > n:
            raise ValueError(
                f"model.clip.trainable_layers={opts.trainable_layers} exceeds the {n} blocks of the "
                f"{opts.phase} tower"
            )
        for layer in layers[n - opts.trainable_layers :]:
            layer.requires_grad_(True)
        norm.requires_grad_(True)
        proj.requires_grad_(True)
    else:
        clip.visual_projection.requires_grad_(True)
        clip.text_projection.requires_grad_(True)
    clip.logit_scale.requires_grad_(bool(opts.train_logit_scale or opts.phase == "projection"))


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
