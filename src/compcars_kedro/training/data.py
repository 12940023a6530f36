"""Data interface of the training library: :class:`ViewData`, index-batch dataset and samplers.

The DataLoader only reads uint8 crops (``np.memmap`` friendly: one fancy-index read per batch,
the store is never copied whole) and returns ``dict(images=uint8 (B, V, S, S, 3), labels, index)``;
conversion to float, augmentation and normalisation run on the target device
(:mod:`~compcars_kedro.training.augment`, the model).

Batches are precomputed per epoch from ``(seed, epoch)``: a random permutation, or P x K batches
from pml's ``MPerClassSampler`` (``length_before_new_iter = len(train)``, so one epoch is always
``len(train)`` samples = ``len(train) // batch_size`` steps, the last incomplete batch dropped).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .seed import derive_seed, worker_init_fn

logger = logging.getLogger(__name__)


@dataclass
class ViewData:
    """Samples = rows of ``view_rows`` pointing into a (memmapped) uint8 crops store."""

    images: np.ndarray  # uint8 (N, S, S, 3), may be a np.memmap; never copied whole
    view_rows: np.ndarray  # int64 (M, V): row of `images` for each view of sample m
    labels: np.ndarray  # int64 (M,) in 0..C-1
    texts: list[str] | None = None  # per-sample prompt (CLIP image-text training only)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"ViewData.images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}"
            )
        self.view_rows = np.asarray(self.view_rows, dtype=np.int64)
        if self.view_rows.ndim == 1:
            self.view_rows = self.view_rows[:, None]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.view_rows.ndim != 2 or len(self.view_rows) != len(self.labels):
            raise ValueError(
                f"ViewData.view_rows must be (M, V) with M = len(labels) = {len(self.labels)}, "
                f"got {self.view_rows.shape}"
            )
        if len(self.view_rows) and (
            self.view_rows.min() < 0 or self.view_rows.max() >= len(self.images)
        ):
            raise ValueError("ViewData.view_rows points outside ViewData.images")
        if self.texts is not None and len(self.texts) != len(self.labels):
            raise ValueError(
                f"ViewData.texts has {len(self.texts)} entries for {len(self.labels)} samples"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_views(self) -> int:
        """V."""
        return int(self.view_rows.shape[1])

    @property
    def image_size(self) -> int:
        """S."""
        return int(self.images.shape[1])

    def __getstate__(self) -> dict[str, Any]:
        """Pickle a memmap store by reference (file name / offset), never by value (DDP spawn)."""
        state = dict(self.__dict__)
        ref = _memmap_ref(self.images)
        if ref is not None:
            state["images"] = None
            state["_memmap"] = ref
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        ref = state.pop("_memmap", None)
        self.__dict__.update(state)
        if ref is not None:
            filename, dtype, shape, offset = ref
            self.images = np.memmap(filename, dtype=dtype, mode="r", shape=shape, offset=offset)

    def subset(self, idx: np.ndarray) -> ViewData:
        """Samples ``idx`` (the image store is shared, not copied)."""
        idx = np.asarray(idx, dtype=np.int64)
        texts = None if self.texts is None else [self.texts[i] for i in idx]
        return ViewData(self.images, self.view_rows[idx], self.labels[idx], texts)


class ViewBatchDataset(Dataset):
    """Dataset indexed by a whole batch of sample indices (used with ``batch_size=None``)."""

    def __init__(self, data: ViewData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: Any) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        rows = self.data.view_rows[idx]
        imgs = np.ascontiguousarray(self.data.images[rows.reshape(-1)])
        s = imgs.shape[1]
        return {
            "images": torch.from_numpy(imgs.reshape(len(idx), rows.shape[1], s, s, 3)),
            "labels": torch.from_numpy(self.data.labels[idx]),
            "index": torch.from_numpy(idx),
        }

    def __getstate__(self) -> dict[str, Any]:
        """Pickle a memmap store by reference (file name / offset), never by value."""
        state = dict(self.__dict__)
        images = self.data.images
        ref = _memmap_ref(images)
        if ref is not None:
            data = self.data
            state["data"] = None
            state["_memmap"] = (ref, data.view_rows, data.labels, data.texts)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        mm = state.pop("_memmap", None)
        self.__dict__.update(state)
        if mm is not None:
            (filename, dtype, shape, offset), view_rows, labels, texts = mm
            images = np.memmap(filename, dtype=dtype, mode="r", shape=shape, offset=offset)
            self.data = ViewData(images, view_rows, labels, texts)


def _memmap_ref(images: np.ndarray) -> tuple[str, Any, tuple[int, ...], int] | None:
    """(filename, dtype, shape, offset) of a whole, contiguous memmap, verified by re-opening."""
    if not isinstance(images, np.memmap) or images.filename is None:
        return None
    if not images.flags.c_contiguous or len(images) == 0:
        return None
    ref = (str(images.filename), images.dtype, tuple(images.shape), int(images.offset))
    with contextlib.suppress(Exception):
        test = np.memmap(ref[0], dtype=ref[1], mode="r", shape=ref[2], offset=ref[3])
        if np.array_equal(test[0], images[0]) and np.array_equal(test[-1], images[-1]):
            return ref
    return None


class EpochBatchSampler(Sampler):
    """Yields precomputed index batches; :meth:`set_batches` swaps them between epochs."""

    def __init__(self, batches: list[np.ndarray] | None = None) -> None:
        self.batches: list[np.ndarray] = list(batches or [])

    def set_batches(self, batches: list[np.ndarray]) -> None:
        """Batches of the next epoch."""
        self.batches = list(batches)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def random_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Seeded permutation cut into full batches (one batch of everything if fewer samples)."""
    rng = np.random.default_rng(derive_seed(seed, epoch, 1))
    perm = rng.permutation(num_samples)
    if num_samples < batch_size:
        return [perm]
    n = num_samples // batch_size
    return list(perm[: n * batch_size].reshape(n, batch_size))


def pk_batches(
    labels: np.ndarray, batch_size: int, m_per_class: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """P x K batches from pml ``MPerClassSampler``, reproducible per ``(seed, epoch)``.

    The sampler draws from ``pytorch_metric_learning.utils.common_functions.NUMPY_RANDOM``; it is
    temporarily replaced by a ``RandomState`` seeded from ``(seed, epoch)``.
    """
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.utils import common_functions as c_f

    n_classes = len(np.unique(labels))
    if m_per_class * n_classes < batch_size:
        raise ValueError(
            f"P x K batches need training.sampler.m_per_class ({m_per_class}) x number of classes "
            f"({n_classes}) >= training.batch_size ({batch_size}); lower training.batch_size or "
            "raise m_per_class"
        )
    if len(labels) < batch_size:
        raise ValueError(
            f"training.batch_size={batch_size} exceeds the {len(labels)} training samples"
        )
    sampler = MPerClassSampler(
        labels, m=m_per_class, batch_size=batch_size, length_before_new_iter=len(labels)
    )
    sampler.labels = sorted(sampler.labels)
    saved = c_f.NUMPY_RANDOM
    c_f.NUMPY_RANDOM = np.random.RandomState(derive_seed(seed, epoch, 2) % (2**32))
    try:
        idx = np.fromiter(iter(sampler), dtype=np.int64)
    finally:
        c_f.NUMPY_RANDOM = saved
    return list(idx.reshape(-1, batch_size))


def sequential_batches(num_samples: int, batch_size: int) -> list[np.ndarray]:
    """In-order batches (the last may be smaller)."""
    idx = np.arange(num_samples)
    return [idx[i : i + batch_size] for i in range(0, num_samples, batch_size)]


def make_loader(
    data: ViewData,
    sampler: EpochBatchSampler,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """DataLoader over index batches (``batch_size=None``); persistent workers when > 0."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=2, worker_init_fn=worker_init_fn)
    return DataLoader(
        ViewBatchDataset(data),
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
        **kwargs,
    )
