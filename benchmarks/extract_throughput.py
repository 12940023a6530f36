"""Extraction throughput: ``extract_embeddings`` over a crops-store memmap vs a plain loop.

The pipeline path reads a uint8 ``.npy`` memmap of random crops through the real loader,
converts/resizes on the device and calls ``model.embed`` under bf16 autocast on CUDA. The plain
path runs ``model.embed(x)`` on float tensors already on the device (no data loading). Same
model, batch and image size, same process; best of ``--repeats`` alternating runs.

    python benchmarks/extract_throughput.py                       # CPU, resnet18 at 64 px
    python benchmarks/extract_throughput.py --device cuda --model resnet50 --image-size 224 \\
        --batch-size 512 --batches 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compcars_kedro.training import ModelConfig, ViewData, build_model
from compcars_kedro.training.inference import autocast, extract_embeddings
from compcars_kedro.training.toy import TINY_ARCH


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18",
                    choices=["resnet18", "resnet50", "vitb32", "clip"])
    ap.add_argument("--tiny", action="store_true", help="tiny test architecture (vitb32 / clip)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (pipeline)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    device = torch.device(args.device)
    views = ["front", "rear"][: args.views]
    arch = TINY_ARCH.get(args.model, {}) if args.tiny else {}
    cfg = ModelConfig(name=args.model, image_size=args.image_size, views=views,
                      head="metric", embedding_dim=None, arch=arch)
    model = build_model(cfg, num_classes=1).to(device).eval()
    if args.compile:  # both paths call model.embed -> forward
        model.forward = torch.compile(model.forward)
    n = args.batch_size * args.batches
    s = args.image_size
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        store = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                          shape=(n * args.views, s, s, 3))
        store[:] = rng.integers(0, 255, size=store.shape, dtype=np.uint8)
        store.flush()
        images = np.load(path, mmap_mode="r")
        data = ViewData(images, np.arange(n * args.views).reshape(n, args.views),
                        np.zeros(n, dtype=np.int64))
        x = torch.rand(args.batch_size, args.views, 3, s, s, device=device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
            model.channels_last = True

        def plain() -> float:
            t0 = time.perf_counter()
            with torch.no_grad(), autocast(device, True):
                for _ in range(args.batches):
                    model.embed(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        def pipeline() -> float:
            t0 = time.perf_counter()
            extract_embeddings(model, data, batch_size=args.batch_size, device=device,
                               num_workers=args.num_workers, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        plain(), pipeline()  # warm-up
        t_plain = min(plain() for _ in range(args.repeats))
        t_pipe = min(pipeline() for _ in range(args.repeats))
    imgs = n * args.views
    print(f"{args.model} {s}px batch {args.batch_size} x {args.views} views on {device}"
          f"{' compile' if args.compile else ''}")
    print(f"plain model.embed loop : {imgs / t_plain:9.1f} img/s")
    print(f"extract_embeddings     : {imgs / t_pipe:9.1f} img/s")
    print(f"ratio                  : {t_plain / t_pipe:9.2f}")


if __name__ == "__main__":
    main()
