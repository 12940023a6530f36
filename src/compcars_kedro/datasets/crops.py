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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.datasets._folder import VersionedFolderDataset, write_npy
from compcars_kedro.types import CropsStore


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
