"""torchvision backbones (ResNet, ViT) and the offline loading of their ``model.weights``.

Every backbone has ``out_dim`` (its feature size) and maps normalised images ``(N, 3, S, S)``
to features ``(N, out_dim)``; :mod:`.models` builds them from ``MODEL_REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .weights import (
    WeightsNotAvailableError,
    classify_weights,
    load_into,
    load_state_dict_file,
    load_torchvision_state_dict,
    strip_prefix,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VIT_B32_ARCH: dict[str, int] = {
    "patch_size": 32,
    "num_layers": 12,
    "num_heads": 12,
    "hidden_dim": 768,
    "mlp_dim": 3072,
}


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


def load_torchvision(
    backbone: nn.Module, weights: str | None, tv_name: str, *, drop: tuple[str, ...]
) -> nn.Module:
    """Load ``model.weights`` into ``backbone.net`` (torchvision cache or a local state dict)."""
    src = classify_weights(weights, torchvision_model=tv_name)
    if src.kind == "none":
        return backbone
    if src.kind == "folder":
        raise WeightsNotAvailableError(
            f"model.weights={weights!r} is a folder; torchvision models need a torchvision "
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
    load_into(backbone.net, state, source=str(weights))
    return backbone
