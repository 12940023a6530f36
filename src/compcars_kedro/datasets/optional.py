"""A dataset that loads ``None`` when its file does not exist yet (optional report inputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset


class OptionalCSVDataset(AbstractDataset[pd.DataFrame, pd.DataFrame | None]):
    """A CSV table at a stable path; ``load`` gives ``None`` until a pipeline has written it.

    Used for the CLIP-layers table: ``kedro run --pipelines clip_layers`` writes it, and the
    reporting pipeline shows the CLIP-layers section only when it exists.
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> pd.DataFrame | None:
        return pd.read_csv(self._filepath) if self._filepath.is_file() else None

    def save(self, data: pd.DataFrame) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        data.to_csv(self._filepath, index=False)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
