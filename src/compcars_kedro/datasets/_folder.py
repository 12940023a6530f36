"""Base class for versioned datasets stored as a folder of files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

from kedro.io.core import AbstractVersionedDataset, Version

FAILED_FILE = "failed.json"
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
        folder = Path(self._get_load_path().as_posix())
        failed = folder / FAILED_FILE
        if failed.exists():  # a failed grid variant: hand the marker on
            from compcars_kedro.grid import VariantFailed

            info = json.loads(failed.read_text())
            return VariantFailed(info["variant"], info["node"], info["error"],  # type: ignore[return-value]
                                 info.get("traceback", ""))
        return self._read(folder)

    def save(self, data: _DI) -> None:
        target = Path(self._get_save_path().as_posix())
        tmp = target.with_name(target.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        from compcars_kedro.grid import VariantFailed

        if isinstance(data, VariantFailed):
            (tmp / FAILED_FILE).write_text(json.dumps(data.to_json(), indent=2))
        else:
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
