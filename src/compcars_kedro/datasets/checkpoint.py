"""Versioned checkpoint dataset: ``model.safetensors`` + ``meta.json`` (never pickled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compcars_kedro.datasets._folder import VersionedFolderDataset
from compcars_kedro.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


class CheckpointDataset(VersionedFolderDataset[Checkpoint, Checkpoint]):
    """A training checkpoint as a versioned folder (safetensors weights, JSON config/state)."""

    def _write(self, folder: Path, data: Checkpoint) -> None:
        save_checkpoint(data, folder, atomic=False)  # folder: the dataset's private .partial

    def _read(self, folder: Path) -> Checkpoint:
        return load_checkpoint(folder)

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "format": "safetensors+json"}
