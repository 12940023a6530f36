"""Batched on-device augmentation of uint8 crops.

Input: uint8 ``(B, V, S, S, 3)`` already on the target device.  Output: float32
``(B, V, 3, S, S)`` in ``[0, 1]`` (the models normalise internally), resized on the device when
the crops store size differs from ``model.image_size``.  Training augmentation, per
image (each view of each sample independently), all random numbers drawn from one
``torch.Generator`` on the device (seeded per ``(seed, epoch)`` by the training loop):

* horizontal flip with probability ``hflip_prob``;
* random affine via ``affine_grid`` / ``grid_sample``: zoom in ``[1 - scale, 1 + scale]``,
  translation in ``[-translate, translate]`` of the image size (reflection padding);
* brightness factor in ``[1 - brightness, 1 + brightness]``, contrast factor in
  ``[1 - contrast, 1 + contrast]`` around the image mean; clamped to ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import AugmentConfig


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, V, S, S, 3)`` -> float32 ``(B, V, 3, S, S)`` in [0, 1] (no augmentation)."""
    if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (B, V, S, S, 3), got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 1, 4, 2, 3).float().div_(255.0)


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of float ``(B, V, 3, S, S)`` to ``size`` (no-op if equal)."""
    b, v, c, h, w = x.shape
    if h == size and w == size:
        return x
    flat = F.interpolate(
        x.reshape(b * v, c, h, w),
        size=(size, size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return flat.reshape(b, v, c, size, size)


def prepare_images(
    x: torch.Tensor,
    *,
    image_size: int | None = None,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    shard: tuple[int, int] | None = None,
) -> torch.Tensor:
    """uint8 ``(B, V, S, S, 3)`` on device -> float ``(B, V, 3, s, s)``: resize to ``image_size``
    when it differs from S, then the training augmentation when ``augment`` is given."""
    out = to_float_images(x)
    if image_size is not None:
        out = resize_images(out, image_size)
    if augment is not None:
        out = augment_images(out, augment, generator, shard)
    return out


def augment_images(
    x: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None,
    shard: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Training augmentation of float images ``(B, V, 3, S, S)`` in [0, 1] (same shape out).

    Fused to few passes over the batch: one ``grid_sample`` (flip + zoom + translation) and one
    ``addcmul`` (brightness + contrast around the per-image mean) + clamp.  ``shard=(rank, N)``:
    ``x`` is the rank's contiguous share of a global batch N times larger; the random numbers
    of the whole global batch are drawn and this share's rows used, so every image gets the
    same augmentation as in a single-process run.
    """
    if not cfg.enabled:
        return x
    b, v, c, h, w = x.shape
    flat = x.reshape(b * v, c, h, w)
    n = flat.shape[0]
    if shard is None:
        r = torch.rand((n, 6), generator=generator, device=flat.device)
    else:
        rank, world = shard
        r = torch.rand((n * world, 6), generator=generator, device=flat.device)
        r = r[rank * n : (rank + 1) * n]
    flip = torch.where(r[:, 0] < cfg.hflip_prob, -1.0, 1.0)
    if cfg.scale > 0 or cfg.translate > 0:
        zoom = 1.0 + (2.0 * r[:, 1] - 1.0) * cfg.scale
        theta = torch.zeros((n, 2, 3), device=flat.device)
        theta[:, 0, 0] = flip / zoom
        theta[:, 1, 1] = 1.0 / zoom
        theta[:, 0, 2] = (2.0 * r[:, 2] - 1.0) * cfg.translate * 2.0
        theta[:, 1, 2] = (2.0 * r[:, 3] - 1.0) * cfg.translate * 2.0
        grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
        flat = F.grid_sample(
            flat, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
    elif cfg.hflip_prob > 0:
        idx = torch.nonzero(flip < 0).flatten()
        flat = flat.clone()
        flat[idx] = flat[idx].flip(-1)
    if cfg.brightness > 0 or cfg.contrast > 0:
        # out = c * (b * x - mean(b * x)) + mean(b * x) = (b * c) * x + (1 - c) * b * mean(x)
        bright = 1.0 + (2.0 * r[:, 4] - 1.0) * cfg.brightness
        contrast = 1.0 + (2.0 * r[:, 5] - 1.0) * cfg.contrast
        mean = flat.mean(dim=(1, 2, 3))
        scale = (bright * contrast).view(n, 1, 1, 1)
        shift = ((1.0 - contrast) * bright * mean).view(n, 1, 1, 1)
        flat = torch.addcmul(shift, flat, scale).clamp_(0.0, 1.0)
    return flat.reshape(b, v, c, h, w)
