"""Tiny synthetic data and tiny architectures for tests, smoke runs and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import ViewData

# architectures small enough for CPU tests (image_size must be a multiple of patch_size)
TINY_ARCH: dict[str, dict[str, int]] = {
    "vitb32": {"patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
    "clip": {
        "patch_size": 8,
        "vision_hidden_size": 32,
        "vision_intermediate_size": 64,
        "vision_layers": 12,
        "vision_heads": 2,
        "text_hidden_size": 32,
        "text_intermediate_size": 64,
        "text_layers": 12,
        "text_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 32,
        "projection_dim": 16,
    },
    "resnet18": {},
    "resnet50": {},
}

_MAKES = ["audi", "bmw", "ford", "kia", "mazda", "opel", "seat", "skoda", "volvo", "honda"]
_TYPES = ["sedan", "suv", "hatchback", "coupe", "wagon"]


def toy_images(
    num_classes: int, per_class: int, image_size: int, seed: int = 0, *, noise: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(num_classes * per_class, S, S, 3)`` and their labels.

    The class is visible (hue + stripe orientation / frequency) but not trivially: every image
    gets a random brightness, stripe phase and Gaussian noise, so a random-init network does not
    already separate the classes.
    """
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s] / s
    palette = rng.uniform(0.35, 0.65, size=(num_classes, 3))
    imgs, labels = [], []
    for c in range(num_classes):
        angle = np.pi * c / max(num_classes, 1)
        freq = 2 + (c % 3)
        proj = np.cos(angle) * xx + np.sin(angle) * yy
        for _ in range(per_class):
            phase = rng.uniform(0, 2 * np.pi)
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * proj + phase)
            img = palette[c][None, None, :] * (0.7 + 0.3 * stripes[..., None])
            img = img * rng.uniform(0.6, 1.4) + rng.normal(0, noise, size=img.shape)
            imgs.append(np.clip(img * 255, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


def toy_prompt_meta(label: int) -> dict[str, str]:
    """Fake make / model / type metadata of a class."""
    return {
        "make": _MAKES[label % len(_MAKES)],
        "model": f"m{label}",
        "type": _TYPES[label % len(_TYPES)],
    }


def make_toy_data(
    num_classes: int = 4,
    per_class: int = 8,
    image_size: int = 32,
    num_views: int = 1,
    *,
    seed: int = 0,
    texts: bool = False,
    memmap_path: str | Path | None = None,
) -> ViewData:
    """Toy :class:`ViewData` (each view of a sample is a different image of the same class);
    with ``memmap_path`` the images are saved as ``.npy`` and opened with ``mmap_mode='r'``."""
    from .tokenizer import build_prompt

    images, labels = toy_images(num_classes, per_class * num_views, image_size, seed)
    order = np.arange(len(labels)).reshape(num_classes, per_class, num_views)
    view_rows = order.reshape(-1, num_views)
    sample_labels = labels[view_rows[:, 0]]
    if memmap_path is not None:
        np.save(memmap_path, images)
        images = np.load(memmap_path, mmap_mode="r")
    prompts = None
    if texts:
        prompts = [build_prompt(**toy_prompt_meta(int(c))) for c in sample_labels]
    return ViewData(images=images, view_rows=view_rows, labels=sample_labels, texts=prompts)
