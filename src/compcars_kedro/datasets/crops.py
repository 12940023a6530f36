"""Crops store: every crop of a dataset as one uint8 ``N x S x S x 3`` array plus an index table.

Training reads the array through ``np.load(mmap_mode="r")``: no JPEG is decoded after the
data_engineering pipeline, and workers share the OS page cache instead of copies.

Saving streams: the ``crop_images`` node returns a store whose ``images`` is a
:class:`~compcars_kedro.data.imaging.CropPlan` (what to crop), and :meth:`CropsStoreDataset.save`
executes it, the workers writing crops straight into ``images.npy`` inside the version's
``.partial`` folder, which is renamed into place only when every crop is written. Peak memory
therefore does not depend on the number of images. A store holding a ready array (tests,
other producers) is written with ``np.save`` as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.data.imaging import CropPlan
from compcars_kedro.datasets._folder import VersionedFolderDataset, write_npy


@dataclass
class CropsStore:
    """Crops (``images``) and their index (one row per image, row ``i`` <-> ``images[i]``).

    ``images`` is an array (a memmap once loaded) or, straight out of ``crop_images``, a lazy
    :class:`CropPlan` that the dataset's save executes.
    """

    images: np.ndarray | CropPlan
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


class CropsStoreDataset(VersionedFolderDataset[CropsStore, CropsStore]):
    """Versioned folder with ``images.npy``, ``index.parquet`` and ``meta.json``.

    Example catalog entry::

        crops:
          type: compcars_kedro.datasets.CropsStoreDataset
          path: data/05_model_input/crops
          versioned: true
    """

    def __init__(self, *, path: str, version: Any = None, mmap: bool = True,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(path=path, version=version, metadata=metadata)
        self._mmap = mmap

    def _write(self, folder: Path, data: CropsStore) -> None:
        write_npy(folder / "images.npy", data.images)  # a CropPlan streams its crops here
        data.index.reset_index(drop=True).to_parquet(folder / "index.parquet", index=False)
        (folder / "meta.json").write_text(json.dumps(data.meta, indent=2, default=str))

    def _read(self, folder: Path) -> CropsStore:
        images = np.load(folder / "images.npy", mmap_mode="r" if self._mmap else None)
        index = pd.read_parquet(folder / "index.parquet")
        meta = json.loads((folder / "meta.json").read_text())
        return CropsStore(images=images, index=index, meta=meta)
