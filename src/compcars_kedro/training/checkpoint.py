"""Pickle-free checkpoints: safetensors + JSON.

A checkpoint folder holds

* ``model.safetensors``: model state dict (keys ``model.*``) + loss module state (``loss.*``,
  e.g. ArcFace class weights) in ONE file;
* ``optimizer.safetensors`` (only when optimizer state is present, i.e. ``last/``): the optimizer
  state tensors flattened to ``state.<param_id>.<key>``;
* ``meta.json``: the JSON-able meta dict (configs, epoch, metrics, label names, history, ...) plus
  the non-tensor optimizer structure (``param_groups``, scalar state) and the scheduler state.

Saves are safe against concurrent writers and kills: each save writes a uniquely named temporary
sibling (``<name>.tmp-<pid>-<random>``) and swaps it in under a file lock; temporaries left by
dead processes are removed by the next save. :func:`work_dir_lock` gives one training run at a
time a work folder (a second run of the same variant fails at once with a clear message).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from compcars_kedro.processes import owner_alive

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "meta.json"


@dataclass
class Checkpoint:
    """In-memory checkpoint (CPU tensors)."""

    model_state: dict[str, torch.Tensor]
    loss_state: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None


def cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU clones (safe to keep while training continues)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.item() if obj.numel() == 1 else obj.tolist())
    if isinstance(obj, np.generic | np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):  # NaN / inf -> null
        return None
    return obj


def flatten_optimizer_state(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-able structure."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state_dict["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = val.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = _jsonable(val)
    structure = {
        "param_groups": _jsonable(state_dict["param_groups"]),
        "scalars": scalars,
        "tensor_pids": sorted({int(k.split(".")[1]) for k in tensors} | {int(p) for p in scalars}),
    }
    return tensors, structure


def unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], structure: dict[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` (loadable by ``optimizer.load_state_dict``)."""
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = val
    for pid, vals in structure.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(vals)
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[int]:
    """Exclusive ``flock`` on ``path`` (released when the block ends or the process dies)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_stale_siblings(folder: Path) -> None:
    """Remove ``<name>.tmp-<pid>-*`` / ``<name>.old-<pid>-*`` left by processes that died."""
    for p in folder.parent.glob(f"{folder.name}.*-*-*"):
        kind, _, rest = p.name[len(folder.name) + 1:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("tmp", "old") and pid.isdigit() and not owner_alive({"pid": pid}):
            shutil.rmtree(p, ignore_errors=True)
            logger.info("removed %s left by a process that died", p)


def recover_interrupted_save(folder: str | Path) -> bool:
    """Put back a checkpoint that a save killed between its two renames left aside.

    :func:`save_checkpoint` moves ``folder`` to ``<name>.old-<token>`` and then the fully
    written ``<name>.tmp-<token>`` to ``folder``; a process killed in between leaves no
    ``folder``. The new checkpoint (the ``tmp`` of the same token) is renamed into place, or
    the previous one when that is missing. Only folders of processes that no longer run are
    touched. Returns whether ``folder`` was recovered.
    """
    folder = Path(folder)
    if folder.exists() or not folder.parent.is_dir():
        return False
    with _flock(folder.with_name(f".{folder.name}.lock")):
        if folder.exists():
            return False
        olds = sorted(folder.parent.glob(f"{folder.name}.old-*-*"),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for old in olds:
            token = old.name[len(folder.name) + len(".old-"):]
            pid = token.split("-", 1)[0]
            if not pid.isdigit() or owner_alive({"pid": pid}):
                continue
            new = folder.with_name(f"{folder.name}.tmp-{token}")
            source = new if (new / MODEL_FILE).is_file() and (new / META_FILE).is_file() else old
            source.rename(folder)
            logger.warning("recovered %s from %s (a save was killed between its two renames)",
                           folder, source.name)
            return True
    return False


def _write_files(ckpt: Checkpoint, folder: Path) -> None:
    tensors = {f"model.{k}": v.contiguous() for k, v in ckpt.model_state.items()}
    tensors.update({f"loss.{k}": v.contiguous() for k, v in ckpt.loss_state.items()})
    save_file(tensors, str(folder / MODEL_FILE))
    meta: dict[str, Any] = {"meta": _jsonable(ckpt.meta)}
    if ckpt.optimizer_state is not None:
        opt_tensors, structure = flatten_optimizer_state(ckpt.optimizer_state)
        save_file(opt_tensors, str(folder / OPTIMIZER_FILE))
        meta["optimizer"] = structure
    if ckpt.scheduler_state is not None:
        meta["scheduler"] = _jsonable(ckpt.scheduler_state)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False))


def save_checkpoint(ckpt: Checkpoint, folder: str | Path, *, atomic: bool = True) -> Path:
    """Write ``ckpt`` to ``folder``: a unique temporary sibling, then swapped in under a lock.

    ``atomic=False`` writes the files straight into ``folder`` (for callers that already write
    into a private folder and rename it, like the versioned ``CheckpointDataset``; other files
    there are kept).
    """
    folder = Path(folder)
    if not atomic:
        folder.mkdir(parents=True, exist_ok=True)
        _write_files(ckpt, folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = folder.with_name(f"{folder.name}.tmp-{token}")
    tmp.mkdir()
    try:
        _write_files(ckpt, tmp)
        with _flock(folder.with_name(f".{folder.name}.lock")):
            _remove_stale_siblings(folder)
            old = folder.with_name(f"{folder.name}.old-{token}")
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.debug("Saved checkpoint to %s", folder)
    return folder


class WorkDirBusyError(RuntimeError):
    """Another live process trains in the same work folder."""


@contextlib.contextmanager
def work_dir_lock(work_dir: str | Path) -> Iterator[Path]:
    """Hold ``<work_dir>/.lock`` for one training run; a second run fails with a clear message.

    The lock is an ``flock``: it is released when the run ends or its process dies, so a killed
    run never blocks the next one.
    """
    import fcntl

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    lock = work / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise WorkDirBusyError(
                f"work dir {work} is in use by {holder}: two runs of the same variant would "
                "overwrite each other's checkpoints. Wait for that run to finish, or give this "
                "one its own `finetuning.work_dir`") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        try:
            yield work
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Read a folder written by :func:`save_checkpoint`."""
    folder = Path(folder)
    recover_interrupted_save(folder)
    if not (folder / MODEL_FILE).is_file() or not (folder / META_FILE).is_file():
        raise FileNotFoundError(
            f"no checkpoint in {folder} (expected {MODEL_FILE} and {META_FILE})"
        )
    tensors = load_file(str(folder / MODEL_FILE), device="cpu")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    loss_state = {k[len("loss.") :]: v for k, v in tensors.items() if k.startswith("loss.")}
    meta = json.loads((folder / META_FILE).read_text())
    optimizer_state = None
    if "optimizer" in meta and (folder / OPTIMIZER_FILE).is_file():
        optimizer_state = unflatten_optimizer_state(
            load_file(str(folder / OPTIMIZER_FILE), device="cpu"), meta["optimizer"]
        )
    return Checkpoint(
        model_state=model_state,
        loss_state=loss_state,
        meta=meta.get("meta", {}),
        optimizer_state=optimizer_state,
        scheduler_state=meta.get("scheduler"),
    )
