"""Versioned embedding arrays: ``embeddings.npy`` (float32, L2-normalised) + ``index.parquet``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compcars_kedro.datasets._folder import VersionedFolderDataset


@dataclass
class EmbeddingSet:
    """Embeddings (one row per sample) and the sample table (ids, labels, make, model, views)."""

    vectors: np.ndarray
    index: pd.DataFrame

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.index):
            raise ValueError(f"embeddings {self.vectors.shape} do not match {len(self.index)} rows")


class EmbeddingsDataset(VersionedFolderDataset[EmbeddingSet, EmbeddingSet]):
    """Example::

        embeddings_finetuned_unseen:
          type: compcars_kedro.datasets.EmbeddingsDataset
          path: data/07_model_output/embeddings/finetuned_unseen
          versioned: true
    """

    def _write(self, folder: Path, data: EmbeddingSet) -> None:
        np.save(folder / "embeddings.npy", np.ascontiguousarray(data.vectors, dtype=np.float32))
        data.index.reset_index(drop=True).to_parquet(folder / "index.parquet", index=False)

    def _read(self, folder: Path) -> EmbeddingSet:
        return EmbeddingSet(np.load(folder / "embeddings.npy"),
                            pd.read_parquet(folder / "index.parquet"))
