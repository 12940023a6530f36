"""Inference: the device / autocast helpers of training and extraction, embedding extraction
and a model rebuilt from a checkpoint.

* :func:`extract_embeddings` returns L2-normalised float32 embeddings (``model.embed``).
* :func:`model_from_checkpoint` rebuilds a checkpoint's model (no pretrained files needed).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import prepare_images
from .checkpoint import Checkpoint, load_checkpoint
from .data import EpochBatchSampler, ViewData, make_loader, sequential_batches
from .models import EmbeddingModel, ModelConfig, build_model

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` with an explicit CUDA index (generators must match tensors' device)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_embeddings(
    model: EmbeddingModel,
    data: ViewData,
    *,
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
    amp: bool = True,
    progress: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``model.embed`` of every sample of ``data`` in order: float32 ``(M, D)``, L2-normalised.

    The model is moved to ``device`` and set to eval mode; bf16 autocast (+ channels_last) on
    CUDA, no augmentation; images are resized on the device to ``model.image_size`` if needed.
    ``out``: an ``(M, D)`` float32 array to fill and return instead of a new one, e.g. a
    ``numpy.lib.format.open_memmap`` of the output file, so the embeddings are streamed to
    disk batch by batch rather than held in memory.
    """
    device = resolve_device(device)
    model.to(device).eval()
    if device.type == "cuda" and not model.channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    shape = (len(data), model.embedding_dim)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif tuple(out.shape) != shape or out.dtype != np.float32:
        raise ValueError(f"out is {out.dtype} {tuple(out.shape)}; expected float32 {shape}")
    sampler = EpochBatchSampler(sequential_batches(len(data), batch_size))
    loader = make_loader(data, sampler, num_workers=num_workers, pin_memory=device.type == "cuda")
    t0 = time.perf_counter()
    for batch in tqdm(loader, desc="embed", disable=not progress, leave=False):
        x = prepare_images(
            batch["images"].to(device, non_blocking=True), image_size=model.image_size
        )
        with autocast(device, amp):
            emb = model.embed(x)
        idx = batch["index"].numpy()
        out[idx] = F.normalize(emb.float(), dim=-1).cpu().numpy()
    dt = time.perf_counter() - t0
    n_img = len(data) * data.num_views
    logger.info(
        "Extracted %d embeddings (dim %d) in %.1fs: %.0f img/s",
        len(data),
        out.shape[1],
        dt,
        n_img / max(dt, 1e-9),
    )
    return out


def model_from_checkpoint(
    ckpt: Checkpoint | str | Path, device: str | torch.device = "cpu"
) -> EmbeddingModel:
    """Rebuild the model of a checkpoint (no pretrained files needed) in eval mode."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    meta = ckpt.meta
    model_cfg = ModelConfig.model_validate(meta["model_config"])
    model = build_model(
        model_cfg, int(meta["num_classes"]), load_weights=False, clip_config=meta.get("clip_config")
    )
    model.load_state_dict(ckpt.model_state)
    return model.to(torch.device(device)).eval()
