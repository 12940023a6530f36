"""Dataset that hands nodes a handle on a raw image collection (nothing is read eagerly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from compcars_kedro.data.raw import RawSource, detect_source


class RawImagesDataset(AbstractDataset[None, RawSource]):
    """Read-only: a CompCars root folder or a manifest CSV; ``load`` returns a ``RawSource``."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> RawSource:
        return detect_source(self._path)

    def save(self, data: None) -> None:
        raise DatasetError("RawImagesDataset is read-only")

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
