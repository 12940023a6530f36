"""Base class for versioned datasets stored as a folder of files."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

from kedro.io.core import AbstractVersionedDataset, Version

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


class VersionedFolderDataset(AbstractVersionedDataset[_DI, _DO], Generic[_DI, _DO]):
    """A versioned dataset whose payload is a folder (``<path>/<version>/<name>/``).

    Subclasses implement ``_write(folder, data)`` and ``_read(folder)``. Saving writes to a
    temporary sibling folder first and renames it, so a crash never leaves a half-written version
    that a later load would pick up.
    """

    def __init__(self, *, path: str, version: Version | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata

    def _write(self, folder: Path, data: _DI) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, folder: Path) -> _DO:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self) -> _DO:
        return self._read(Path(self._get_load_path().as_posix()))

    def save(self, data: _DI) -> None:
        target = Path(self._get_save_path().as_posix())
        tmp = target.with_name(target.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self._write(tmp, data)
        if target.exists():  # unversioned overwrite
            shutil.rmtree(target)
        tmp.rename(target)

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except Exception:  # noqa: BLE001 - no version yet
            return False
        return Path(path.as_posix()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}
