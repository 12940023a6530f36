"""Which torch device a node should use.

``GPURunner`` sets the device of each ``gpu``-tagged node through a context variable; nodes call
:func:`current_device`. Without the runner (plain ``SequentialRunner``, notebooks, tests) the
device is chosen the same way: the ``COMPCARS_DEVICE`` variable if set, else ``cuda`` when
available, else ``cpu``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

import torch

DEVICE_ENV = "COMPCARS_DEVICE"
_current: ContextVar[torch.device | None] = ContextVar("compcars_device", default=None)


def select_device(preferred: str | None = None) -> torch.device:
    """``preferred`` > ``$COMPCARS_DEVICE`` > cuda if available > cpu."""
    name = preferred or os.environ.get(DEVICE_ENV) or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested (runner param or ${DEVICE_ENV}) but CUDA "
                           "is not available; use device=cpu or auto")
    return device


def current_device() -> torch.device:
    """The device set by the runner for the running node, else :func:`select_device`."""
    return _current.get() or select_device()


@contextlib.contextmanager
def use_device(device: torch.device) -> Iterator[torch.device]:
    token = _current.set(device)
    try:
        yield device
    finally:
        _current.reset(token)
