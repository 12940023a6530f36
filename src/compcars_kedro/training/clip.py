"""CLIP (Hugging Face ``CLIPModel``) as a backbone: building it offline and its training phases.

The per-view embedding is the image tower + ``visual_projection`` output (the image embedding
never sees text); the text tower is only used by the ``clip`` loss through
:meth:`ClipBackbone.encode_text`.  :func:`clip_tower` / :func:`apply_clip_phase` take the
:class:`~compcars_kedro.training.models.EmbeddingModel` whose backbone is a :class:`ClipBackbone`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .config import ClipOptions
from .weights import (
    FETCH_HINT,
    WeightsNotAvailableError,
    classify_weights,
    load_into,
    load_state_dict_file,
    strip_prefix,
)

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
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


def build_clip_backbone(
    weights: str | None,
    arch: Mapping[str, int],
    image_size: int,
    clip_config: Mapping[str, Any] | None = None,
) -> ClipBackbone:
    """CLIP backbone of ``model.weights`` / ``model.arch`` (over :data:`CLIP_B32_ARCH`);
    ``clip_config`` (a ``CLIPConfig.to_dict()``) builds an uninitialised model of that
    architecture (used when a checkpoint's weights are loaded afterwards)."""
    from transformers import CLIPConfig, CLIPModel

    if clip_config is not None:
        config = CLIPConfig.from_dict(dict(clip_config))
        return ClipBackbone(CLIPModel(config), image_size)
    src = classify_weights(weights, torchvision_model=None)
    if src.kind in ("hf", "folder"):
        if arch:
            raise ValueError(
                f"model.arch={arch} cannot be combined with model.weights={weights!r} "
                "(a pretrained Hugging Face CLIP defines its own architecture); remove model.arch"
            )
        try:
            clip = CLIPModel.from_pretrained(src.value, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsNotAvailableError(
                f"model.weights={weights!r} is not in the local Hugging Face cache "
                f"(HF_HOME={_env('HF_HOME')}) and nothing is downloaded during runs; "
                f"{FETCH_HINT}, or set model.weights to a local save_pretrained folder / "
                f".safetensors file, or null for random init ({exc})"
            ) from exc
        clip = clip.float()
        logger.info("Loaded CLIP weights from %s", src.value)
    else:
        arch = {**CLIP_B32_ARCH, **arch}
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
            "image_size": image_size,
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
            load_into(clip, state, source=str(weights))
            logger.info("Loaded CLIP state dict from %s", src.value)
    return ClipBackbone(clip, image_size)


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "<unset>")


def _drop_non_persistent(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Remove buffers that the module does not persist (e.g. ``position_ids``) from ``state``."""
    expected = set(module.state_dict())
    for k in [k for k in state if k not in expected and k.endswith("position_ids")]:
        del state[k]


def clip_tower(model: nn.Module, tower: str) -> tuple[nn.ModuleList, nn.Module, nn.Module]:
    """``(transformer blocks, final norm, projection)`` of the ``vision`` or ``text`` tower."""
    clip = model.backbone.clip
    if tower == "vision":
        return (
            clip.vision_model.encoder.layers,
            clip.vision_model.post_layernorm,
            clip.visual_projection,
        )
    return clip.text_model.encoder.layers, clip.text_model.final_layer_norm, clip.text_projection


def apply_clip_phase(model: nn.Module, opts: ClipOptions) -> None:
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
