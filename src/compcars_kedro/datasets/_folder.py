"""Base class for versioned datasets stored as a folder of files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

import numpy as np
from kedro.io.core import AbstractVersionedDataset, Version

from compcars_kedro.processes import owner_alive as _owner_alive
from compcars_kedro.processes import process_start as _process_start
from compcars_kedro.types import VariantFailed

logger = logging.getLogger(__name__)

FAILED_FILE = "failed.json"
#: written first into every ``.partial`` folder: who is writing it (host, pid, process start)
OWNER_FILE = ".owner.json"
#: a partial folder without an owner file (older code, or a save between mkdir and the owner
#: write) is stale after this many seconds; one owned by another host after ``FOREIGN_STALE_S``
UNOWNED_STALE_S = 60.0
FOREIGN_STALE_S = 24 * 3600.0
#: rows per block when an array is converted while it is written
_NPY_BLOCK_BYTES = 64 << 20
_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


def write_npy(path: Path, data: Any, dtype: Any = None) -> None:
    """Write ``data`` as the ``.npy`` file ``path`` without holding a second copy in memory.

    ``data`` is an array, or a lazy producer with ``write_npy(path)`` (e.g. a ``CropPlan``),
    which streams itself. An array that already has the target dtype and is C-contiguous goes
    through ``np.save``; any other (a view, another dtype, a memmap) is converted block by
    block into ``numpy.lib.format.open_memmap``.
    """
    if hasattr(data, "write_npy"):
        data.write_npy(path)
        return
    arr = np.asanyarray(data)
    target = np.dtype(dtype) if dtype is not None else arr.dtype
    if (arr.dtype == target and arr.flags.c_contiguous and not isinstance(arr, np.memmap)) \
            or arr.size == 0:
        np.save(path, np.ascontiguousarray(arr, dtype=target))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=target, shape=arr.shape)
    rows = max(1, _NPY_BLOCK_BYTES // max(1, arr[0].nbytes if arr.ndim else arr.nbytes))
    for start in range(0, len(arr), rows):
        out[start:start + rows] = arr[start:start + rows]
    out.flush()
    del out


def _owner_record() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "start": _process_start(os.getpid()), "time": time.time()}


def is_stale_partial(folder: Path, now: float | None = None) -> bool:
    """Whether a ``.partial`` folder was left by a save that can no longer finish.

    Stale: its owner (host, pid, process start time) is this host's and no longer runs; or it
    has no readable owner file and is older than :data:`UNOWNED_STALE_S`; or its owner is
    another host and it is older than :data:`FOREIGN_STALE_S` (shared filesystems).
    """
    now = time.time() if now is None else now
    try:
        age = now - folder.stat().st_mtime
    except OSError:
        return False  # gone already
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return age > UNOWNED_STALE_S
    if owner.get("host") == socket.gethostname():
        return not _owner_alive(owner)
    return now - float(owner.get("time", now)) > FOREIGN_STALE_S


def _drop_partial(folder: Path, root: Path) -> None:
    """Remove a ``.partial`` folder and its version folder when that is left empty."""
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    try:
        if parent != root.parent and not any(parent.iterdir()):
            parent.rmdir()  # the version folder of a save that never finished
    except OSError:  # another process is using it
        pass


def remove_stale_partials(path: Path, name: str) -> list[Path]:
    """Remove stale ``<name>.partial`` folders of a dataset rooted at ``path`` (all versions)."""
    candidates = [path.with_name(name + ".partial")] if path.name == name else []
    if path.is_dir():
        candidates += sorted(path.glob(f"*/{name}.partial"))
    removed = []
    for folder in candidates:
        if folder.is_dir() and is_stale_partial(folder):
            _drop_partial(folder, path)
            removed.append(folder)
    if removed:
        logger.warning("removed %d stale partial folder(s) left by an interrupted save: %s",
                       len(removed), ", ".join(str(p) for p in removed))
    return removed


class VersionedFolderDataset(AbstractVersionedDataset[_DI, _DO], Generic[_DI, _DO]):
    """A versioned dataset whose payload is a folder (``<path>/<version>/<name>/``).

    Subclasses implement ``_write(folder, data)`` and ``_read(folder)``. Saving writes to a
    temporary sibling folder first and renames it, so a crash never leaves a half-written version
    that a later load would pick up. The temporary folder records its owner (host, pid); the
    next save of the dataset removes the ``.partial`` folders of owners that died
    (:func:`remove_stale_partials`).
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
            info = json.loads(failed.read_text())
            return VariantFailed(info["variant"], info["node"], info["error"],  # type: ignore[return-value]
                                 info.get("traceback", ""))
        return self._read(folder)

    def save(self, data: _DI) -> None:
        target = Path(self._get_save_path().as_posix())
        root = Path(self._filepath.as_posix())
        remove_stale_partials(root, root.name)
        tmp = target.with_name(target.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / OWNER_FILE).write_text(json.dumps(_owner_record()))
        try:
            if isinstance(data, VariantFailed):
                (tmp / FAILED_FILE).write_text(json.dumps(data.to_json(), indent=2))
            else:
                self._write(tmp, data)
        except BaseException:
            _drop_partial(tmp, root)  # a failed save leaves nothing behind
            raise
        (tmp / OWNER_FILE).unlink(missing_ok=True)  # a writer may have swapped the folder
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
