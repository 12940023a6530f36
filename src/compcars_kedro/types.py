"""The data the pipelines pass between nodes, free of Kedro and torch.

``CropsStore`` (crops + index), ``EmbeddingSet`` (vectors + sample table) and ``VariantFailed``
(the marker a failed grid variant carries instead of data). The datasets in
:mod:`compcars_kedro.datasets` save and load them; ``data/``, ``clustering/`` and ``reporting/``
use them without importing Kedro.

An array slot may hold a *plan* instead of an array (:class:`ArrayPlan`): something with a
``shape`` that writes itself into a ``.npy`` file when the dataset is saved (the crops store's
:class:`~compcars_kedro.data.imaging.CropPlan`, the embeddings'
:class:`~compcars_kedro.datasets.embeddings.EmbeddingPlan`), so the whole array never has to be
held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class ArrayPlan(Protocol):
    """An array still to be produced: its ``shape`` / ``ndim`` / ``len`` and ``write_npy``."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def ndim(self) -> int: ...

    def __len__(self) -> int: ...

    def write_npy(self, path: Path) -> None: ...


@dataclass
class CropsStore:
    """Crops (``images``) and their index (one row per image, row ``i`` <-> ``images[i]``).

    ``images`` is an array (a memmap once loaded) or, straight out of ``crop_images``, a lazy
    :class:`~compcars_kedro.data.imaging.CropPlan` that the dataset's save executes.
    """

    images: np.ndarray | ArrayPlan
    index: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 N x S x S x 3, got {self.images.dtype} "
                             f"{self.images.shape}")
        if len(self.index) != len(self.images):
            raise ValueError(f"index has {len(self.index)} rows for {len(self.images)} crops")

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def rows_for(self, image_ids: pd.Series | list[str]) -> np.ndarray:
        """Row numbers of the given image ids (KeyError names a missing id)."""
        lookup = pd.Series(np.arange(len(self.index)), index=self.index["image_id"].to_numpy())
        missing = pd.Index(image_ids).difference(lookup.index)
        if len(missing):
            raise KeyError(f"{len(missing)} image ids are not in the crops store, e.g. {missing[0]}")
        return lookup.loc[list(image_ids)].to_numpy(dtype=np.int64)


@dataclass
class EmbeddingSet:
    """Embeddings (one row per sample) and the sample table (ids, labels, make, model, views).

    ``vectors`` is an array, or a plan such as
    :class:`~compcars_kedro.datasets.embeddings.EmbeddingPlan` (computed when the set is saved).
    """

    vectors: np.ndarray | ArrayPlan
    index: pd.DataFrame

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.index):
            raise ValueError(f"embeddings {self.vectors.shape} do not match {len(self.index)} rows")


@dataclass(frozen=True)
class VariantFailed:
    """Marker travelling through a failed variant instead of real data."""

    variant: str
    node: str
    error: str
    traceback: str = ""

    def to_json(self) -> dict[str, str]:
        return {"status": "failed", "variant": self.variant, "node": self.node,
                "error": self.error, "traceback": self.traceback}
