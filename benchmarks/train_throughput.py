"""Training throughput: the library's training loop vs a plain PyTorch loop.

The library path reads a crops-store-like uint8 ``.npy`` memmap of random images
(``batch_size * (warmup_steps + steps)`` crops, one epoch per run) through the real DataLoader
(index batches) + on-device augmentation + ``Trainer.train_step`` (autocast, loss, backward, grad
clipping, AdamW, LR scheduler); the first ``warmup_steps`` steps of the epoch are not timed.
The plain loop runs the same model (backbone + classification head, CE loss) on random float
tensors already on the device: forward, loss, backward, step.  Both in the same process; bf16
autocast + channels_last on CUDA for both.  Runs alternate (``--repeats``), best of each reported.
DataLoader workers pass batches through shared memory: /dev/shm must hold about
``num_workers * 2 * batch_size * S * S * 3`` bytes.

CPU default (about a minute)::

    python benchmarks/train_throughput.py

GPU::

    python benchmarks/train_throughput.py --device cuda --model resnet50 --image-size 224 \\
        --batch-size 256 --steps 30 --warmup-steps 10 --num-workers 8
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compcars_kedro.training import LossConfig, ModelConfig, TrainingConfig, ViewData, build_model
from compcars_kedro.training.toy import TINY_ARCH
from compcars_kedro.training.trainer import Trainer

logger = logging.getLogger("train_throughput")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """CLI arguments."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", default="resnet18", choices=["resnet18", "resnet50", "vitb32", "clip"]
    )
    p.add_argument("--tiny", action="store_true", help="tiny test architecture (vitb32 / clip)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="alternating runs; best of each reported")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast (CUDA only)",
    )
    p.add_argument("--num-workers", type=int, default=None, help="default: 0 on CPU, 8 on CUDA")
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data-dir", type=Path, default=None, help="where to write the .npy store")
    return p.parse_args(argv)


def write_store(path: Path, n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random uint8 (n, size, size, 3) ``.npy`` written in chunks, reopened as a memmap."""
    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    chunk = max(1, (64 << 20) // (size * size * 3))
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        arr[i:j] = rng.integers(0, 256, size=(j - i, size, size, 3), dtype=np.uint8)
    arr.flush()
    del arr
    return np.load(path, mmap_mode="r")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_library(trainer: Trainer, steps: int, warmup: int, epoch: int) -> tuple[float, int]:
    """(seconds, images) of ``steps`` library steps timed after ``warmup`` steps of the same
    epoch (one DataLoader pass over ``batch_size * (warmup + steps)`` crops)."""
    marks: dict[str, float] = {}

    def on_step(done: int) -> None:
        if done == warmup:
            _sync(trainer.device)
            marks["t0"] = time.perf_counter()

    if warmup == 0:
        marks["t0"] = time.perf_counter()
    res = trainer.train_epoch(epoch, max_steps=warmup + steps, on_step=on_step)
    _sync(trainer.device)
    dt = time.perf_counter() - marks["t0"]
    timed = int(res["steps"]) - warmup
    if timed != steps:
        raise RuntimeError(f"only {timed} timed steps ran (store too small?)")
    return dt, timed * trainer.cfg.batch_size * trainer.model.num_views


def run_plain(
    model_cfg: ModelConfig, args: argparse.Namespace, device: torch.device
) -> tuple[float, int]:
    """(seconds, images) of a plain loop on random on-device tensors (same model + head)."""
    model = build_model(model_cfg, args.num_classes).to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)

    def step_fn(x: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.backbone(x))

    fwd = torch.compile(step_fn) if args.compile else step_fn
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True if cuda else None)  # as the library
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    amp = args.amp and cuda

    def one() -> torch.Tensor:
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(args.warmup_steps):
        one()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        last = one()
    last.item()
    _sync(device)
    return time.perf_counter() - t0, args.steps * args.batch_size


def main(argv: list[str] | None = None) -> None:
    """Run both loops, print img/s and the ratio."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    workers = (
        args.num_workers if args.num_workers is not None else (8 if device.type == "cuda" else 0)
    )
    arch = TINY_ARCH[args.model] if args.tiny else {}
    model_cfg = ModelConfig(
        name=args.model, image_size=args.image_size, head="classification", arch=arch
    )
    n = args.batch_size * (args.steps + args.warmup_steps)
    train_cfg = TrainingConfig(
        epochs=1000,
        batch_size=args.batch_size,
        num_workers=workers,
        amp=args.amp,
        compile=args.compile,
        channels_last=True,
        warmup_steps=0,
        seed=0,
    )
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        t0 = time.perf_counter()
        images = write_store(Path(tmp) / "crops.npy", n, args.image_size)
        logger.info(
            "wrote %d random %dpx crops (%.0f MB) in %.1fs",
            n,
            args.image_size,
            images.nbytes / 2**20,
            time.perf_counter() - t0,
        )
        labels = np.random.default_rng(0).integers(0, args.num_classes, n)
        data = ViewData(images=images, view_rows=np.arange(n)[:, None], labels=labels)
        trainer = Trainer(
            model_cfg,
            LossConfig(name="ce"),
            train_cfg,
            data,
            num_classes=args.num_classes,
            device=device,
            progress=False,
        )
        lib_rates, plain_rates = [], []
        for r in range(args.repeats):
            dt, imgs = run_library(trainer, args.steps, args.warmup_steps, r)
            lib_rates.append(imgs / dt)
            logger.info("library run %d: %.1f img/s", r + 1, lib_rates[-1])
            dt, imgs = run_plain(model_cfg, args, device)
            plain_rates.append(imgs / dt)
            logger.info("plain run %d: %.1f img/s", r + 1, plain_rates[-1])
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del trainer

    lib, plain = max(lib_rates), max(plain_rates)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print()
    print(
        f"model={args.model}{' (tiny)' if args.tiny else ''} image_size={args.image_size} "
        f"batch={args.batch_size} steps={args.steps} device={dev_name} amp={args.amp and device.type == 'cuda'} "
        f"compile={args.compile} workers={workers} torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print(f"{'loop':<10}{'best img/s':>12}{'median img/s':>14}{'ms/step':>10}")
    for name, rates in (("library", lib_rates), ("plain", plain_rates)):
        best = max(rates)
        print(
            f"{name:<10}{best:>12.1f}{statistics.median(rates):>14.1f}{1000 * args.batch_size / best:>10.1f}"
        )
    print(f"ratio library/plain = {lib / plain:.3f}")


if __name__ == "__main__":
    main()
