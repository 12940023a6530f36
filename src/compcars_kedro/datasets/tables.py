"""Folder-backed table / JSON datasets (used for grid variants, which may hold a failure marker)
and a read-only collector of every variant's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from compcars_kedro.datasets._folder import FAILED_FILE, VersionedFolderDataset


def newest_version(folder: Path) -> Path | None:
    """``<folder>/<newest timestamp>/<folder name>`` of a versioned dataset, or None."""
    if not folder.is_dir():
        return None
    versions = sorted((p for p in folder.iterdir() if p.is_dir()
                       and not p.name.endswith(".partial")), reverse=True)
    return versions[0] / folder.name if versions else None


class TableDataset(VersionedFolderDataset[pd.DataFrame, pd.DataFrame]):
    """A DataFrame as ``data.csv`` (or ``data.parquet`` with ``format: parquet``) in a folder."""

    def __init__(self, *, path: str, version: Any = None, format: str = "csv",  # noqa: A002
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(path=path, version=version, metadata=metadata)
        if format not in ("csv", "parquet"):
            raise ValueError(f"TableDataset format={format!r}; valid: csv, parquet")
        self._format = format

    def _write(self, folder: Path, data: pd.DataFrame) -> None:
        if self._format == "csv":
            data.to_csv(folder / "data.csv", index=False)
        else:
            data.to_parquet(folder / "data.parquet", index=False)

    def _read(self, folder: Path) -> pd.DataFrame:
        if self._format == "csv":
            return pd.read_csv(folder / "data.csv")
        return pd.read_parquet(folder / "data.parquet")


class JsonDataset(VersionedFolderDataset[dict, dict]):
    """A JSON-able dict as ``data.json`` in a folder."""

    def _write(self, folder: Path, data: dict) -> None:
        (folder / "data.json").write_text(json.dumps(data, indent=2, default=str))

    def _read(self, folder: Path) -> dict:
        return json.loads((folder / "data.json").read_text())


class GridResultsDataset(AbstractDataset[None, dict[str, pd.DataFrame]]):
    """Read-only: the newest version of every variant's tables under ``root``, concatenated.

    ``load()`` returns ``{"status", "training_history", "retrieval_metrics",
    "clustering_metrics"}``; ``status`` has one row per variant (``ok`` or ``failed`` with the
    node and error), so a failed variant is reported instead of silently missing.
    """

    TABLES = ("training_history", "retrieval_metrics", "clustering_metrics")

    def __init__(self, *, root: str, study: str = "grid",
                 metadata: dict[str, Any] | None = None) -> None:
        self._root = Path(root)
        self._study = study
        self.metadata = metadata

    def load(self) -> dict[str, pd.DataFrame]:
        statuses, tables = [], {t: [] for t in self.TABLES}
        for variant_dir in sorted(p for p in self._root.glob("*") if p.is_dir()):
            status_dir = newest_version(variant_dir / "status")
            if status_dir is None or not (status_dir / "data.json").exists():
                continue
            status = json.loads((status_dir / "data.json").read_text())
            if status.get("study", "grid") != self._study:
                continue
            statuses.append(status)
            if status.get("status") != "ok":
                continue
            for name in self.TABLES:
                folder = newest_version(variant_dir / name)
                if folder is not None and (folder / "data.csv").exists() \
                        and not (folder / FAILED_FILE).exists():
                    tables[name].append(pd.read_csv(folder / "data.csv"))
        out = {"status": pd.DataFrame(statuses)}
        for name, frames in tables.items():
            out[name] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return out

    def save(self, data: None) -> None:
        raise DatasetError("GridResultsDataset is read-only")

    def _describe(self) -> dict[str, Any]:
        return {"root": str(self._root), "study": self._study}
