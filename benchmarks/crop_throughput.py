"""Crop-stage throughput vs a naive PIL loop, on the same generated 800x600 CompCars-layout images.

    python benchmarks/crop_throughput.py [--images-per-view 20] [--size 224]

Prints images/s per core for the naive loop (open -> convert -> crop -> resize, one image at a
time), for ``crop_many`` with 1 process and with 2 processes, and the ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from compcars_kedro.data.imaging import CropSpec, crop_many, naive_crop
from compcars_kedro.data.raw import detect_source
from compcars_kedro.pipelines.data_engineering.nodes import parse_raw, validate_images
from compcars_kedro.sample import SampleSpec, generate_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images-per-view", type=int, default=24)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resize-mode", default="pad", choices=["pad", "center_crop"])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "compcars"
        generate_sample(root, SampleSpec(width=800, height=600, images_per_view=args.images_per_view,
                                         broken=False))
        raw = detect_source(root)
        valid, _, _ = validate_images(parse_raw(raw), raw, {"num_workers": 1})
        paths = [str(raw.resolve(p)) for p in valid["path"]]
        boxes = valid[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
        n = len(paths)
        spec = CropSpec(size=args.size, resize_mode=args.resize_mode, margin=0.05)

        def best(fn) -> float:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        t_naive = best(lambda: [naive_crop(p, b, spec) for p, b in zip(paths, boxes, strict=True)])
        t_one = best(lambda: crop_many(paths, boxes, spec, num_workers=1))
        t_two = best(lambda: crop_many(paths, boxes, spec, num_workers=2, chunksize=8))

        a = crop_many(paths[:20], boxes[:20], spec, num_workers=1).astype(int)
        b = np.stack([naive_crop(p, bb, spec) for p, bb in zip(paths[:20], boxes[:20], strict=True)])
        diff = float(np.abs(a - b).mean())

    naive, one, two = n / t_naive, n / t_one, n / t_two / 2
    print(f"{n} images 800x600 -> {args.size}px {args.resize_mode} crops (best of {args.repeats})")
    print(f"{'method':<28}{'img/s per core':>16}{'ratio vs naive':>16}")
    print(f"{'naive PIL loop (1 proc)':<28}{naive:>16.1f}{1.0:>16.2f}")
    print(f"{'crop_many, 1 process':<28}{one:>16.1f}{one / naive:>16.2f}")
    print(f"{'crop_many, 2 processes':<28}{two:>16.1f}{two / naive:>16.2f}")
    print(f"speed-up 1 -> 2 processes: {t_one / t_two:.2f}x (ideal 2.00x)")
    print(f"mean |pixel diff| crop_many vs naive: {diff:.2f} / 255")


if __name__ == "__main__":
    main()
