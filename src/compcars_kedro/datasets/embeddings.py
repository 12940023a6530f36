"""Versioned embedding arrays: ``embeddings.npy`` (float32, L2-normalised) + ``index.parquet``.

Written like the crops store: ``vectors`` may be a ready array (written without a second copy,
converted to float32 block by block when needed) or a lazy producer with ``write_npy(path)``
that streams into the version's ``.partial`` folder, e.g. :class:`EmbeddingPlan`, which runs
:func:`~compcars_kedro.training.inference.extract_embeddings` straight into a
``numpy.lib.format.open_memmap`` of the output file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.datasets._folder import VersionedFolderDataset, write_npy
from compcars_kedro.types import EmbeddingSet


@dataclass(eq=False)
class EmbeddingPlan:
    """Embeddings still to compute: ``model.embed`` of every sample of ``data``, written by
    :meth:`write_npy` straight into the output file (``extract_embeddings(out=memmap)``)."""

    model: Any = field(repr=False)
    data: Any = field(repr=False)
    batch_size: int = 256
    device: Any = "cpu"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.data), int(self.model.embedding_dim))

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.data)

    def write_npy(self, path: Path) -> None:
        from compcars_kedro.training.inference import extract_embeddings

        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=self.shape)
        extract_embeddings(self.model, self.data, batch_size=self.batch_size, device=self.device,
                           out=out, **self.options)
        out.flush()
        del out


class EmbeddingsDataset(VersionedFolderDataset[EmbeddingSet, EmbeddingSet]):
    """Example::

        embeddings_finetuned_unseen:
          type: compcars_kedro.datasets.EmbeddingsDataset
          path: data/07_model_output/embeddings/finetuned_unseen
          versioned: true
    """

    def _write(self, folder: Path, data: EmbeddingSet) -> None:
        write_npy(folder / "embeddings.npy", data.vectors, dtype=np.float32)
        data.index.reset_index(drop=True).to_parquet(folder / "index.parquet", index=False)

    def _read(self, folder: Path) -> EmbeddingSet:
        return EmbeddingSet(np.load(folder / "embeddings.npy"),
                            pd.read_parquet(folder / "index.parquet"))
