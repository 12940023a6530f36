"""The versioned checkpoint dataset saves into its private .partial folder and loads back."""

from __future__ import annotations

from pathlib import Path

import torch
from kedro.io import Version

from compcars_kedro.datasets import CheckpointDataset
from compcars_kedro.training.checkpoint import Checkpoint


def test_versioned_checkpoint_roundtrip(tmp_path: Path) -> None:
    ckpt = Checkpoint(model_state={"w": torch.arange(3.0)}, meta={"stage": "baseline"})
    CheckpointDataset(path=str(tmp_path / "ck"), version=Version(None, None)).save(ckpt)
    loaded = CheckpointDataset(path=str(tmp_path / "ck"), version=Version(None, None)).load()
    assert torch.equal(loaded.model_state["w"], ckpt.model_state["w"])
    assert loaded.meta == {"stage": "baseline"}
    (version,) = (tmp_path / "ck").iterdir()
    assert sorted(p.name for p in version.iterdir()) == ["ck"]  # no temporaries or locks left
