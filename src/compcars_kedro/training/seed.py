"""Seeding helpers: global seeding, per-(seed, epoch) derived seeds and DataLoader workers."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed derived from integers (e.g. ``(seed, epoch, stream)``)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed python, numpy and torch (+CUDA); return a CPU generator for DataLoaders.

    ``deterministic`` switches on ``torch.use_deterministic_algorithms(True, warn_only=True)``,
    ``cudnn.deterministic`` and disables ``cudnn.benchmark`` (sets ``CUBLAS_WORKSPACE_CONFIG``
    when unset); otherwise ``cudnn.benchmark`` is enabled.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def worker_init_fn(worker_id: int) -> None:
    """Seed python/numpy in a DataLoader worker from the torch seed torch gave the worker."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)
