"""Pickle-free checkpoints: safetensors + JSON.

A checkpoint folder holds

* ``model.safetensors``: model state dict (keys ``model.*``) + loss module state (``loss.*``,
  e.g. ArcFace class weights) in ONE file;
* ``optimizer.safetensors`` (only when optimizer state is present, i.e. ``last/``): the optimizer
  state tensors flattened to ``state.<param_id>.<key>``;
* ``meta.json``: the JSON-able meta dict (configs, epoch, metrics, label names, history, ...) plus
  the non-tensor optimizer structure (``param_groups``, scalar state) and the scheduler state.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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


def save_checkpoint(ckpt: Checkpoint, folder: str | Path) -> Path:
    """Write ``ckpt`` to ``folder`` (replaced atomically-ish via a temporary sibling folder)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {f"model.{k}": v.contiguous() for k, v in ckpt.model_state.items()}
    tensors.update({f"loss.{k}": v.contiguous() for k, v in ckpt.loss_state.items()})
    save_file(tensors, str(tmp / MODEL_FILE))
    meta: dict[str, Any] = {"meta": _jsonable(ckpt.meta)}
    if ckpt.optimizer_state is not None:
        opt_tensors, structure = flatten_optimizer_state(ckpt.optimizer_state)
        save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
        meta["optimizer"] = structure
    if ckpt.scheduler_state is not None:
        meta["scheduler"] = _jsonable(ckpt.scheduler_state)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False))
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    logger.debug("Saved checkpoint to %s", folder)
    return folder


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Read a folder written by :func:`save_checkpoint`."""
    folder = Path(folder)
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
