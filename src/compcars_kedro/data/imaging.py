"""Image decoding checks and bbox cropping, parallel over processes.

Cropping uses Pillow's reduced-size JPEG decoding (``Image.draft``): libjpeg decodes at 1/2, 1/4
or 1/8 scale directly when the crop is downscaled anyway, which is where most of the speed-up
over a naive ``open -> convert -> crop -> resize`` loop comes from.

Boxes are in *displayed* pixels: the EXIF orientation (``ImageOps.exif_transpose``) is applied
before cropping, as it is for the sizes recorded in the manifest.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RESIZE_MODES = ("center_crop", "pad")
ORIENTATION_TAG = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation (1 = as stored) read without decoding pixels."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1  # PNG getexif() would decode the whole image to look for a late eXIf chunk
    try:
        return int(img.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block means "as stored"
        return 1


def displayed_size(img: Image.Image) -> tuple[tuple[int, int], bool]:
    """``((width, height) as displayed, exif_rotated)`` of an opened (not decoded) image."""
    orientation = exif_orientation(img)
    w, h = img.size
    return ((h, w) if orientation in _SWAPS_AXES else (w, h)), 2 <= orientation <= 8


def check_decodes(path: str) -> str | None:
    """Return None when the image decodes fully, else a short error text.

    Decoding uses ``draft`` at 1/8 scale: every entropy-coded byte is still read, so a truncated
    or corrupted JPEG fails, at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
        return None
    except Exception as exc:  # noqa: BLE001 - the reason is recorded, never raised
        return f"{type(exc).__name__}: {exc}"[:200]


@dataclass(frozen=True)
class CropSpec:
    size: int = 64
    margin: float = 0.0
    resize_mode: str = "center_crop"  # "center_crop": short side -> size then centre crop; "pad"
    pad_value: int = 0

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"crop.resize_mode={self.resize_mode!r}; valid: {RESIZE_MODES}")


def crop_box(bbox: Sequence[float], width: int, height: int, margin: float) -> tuple[float, ...]:
    """Grow a 0-based half-open box by ``margin`` x its size on each side, clipped to the image."""
    x0, y0, x1, y1 = bbox
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return max(0.0, x0 - mx), max(0.0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def _target_region(box: tuple[float, ...], spec: CropSpec) -> tuple[tuple[float, ...], tuple[int, int]]:
    """Region of the image to sample and the size it is resized to before padding."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    s = spec.size
    if spec.resize_mode == "center_crop":
        side = min(bw, bh)  # square centre window of the box, short side -> size
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), (s, s)
    scale = s / max(bw, bh)
    return box, (max(1, round(bw * scale)), max(1, round(bh * scale)))


def crop_image(path: str, bbox: Sequence[float], spec: CropSpec) -> np.ndarray:
    """Crop ``bbox`` (0-based half-open, displayed pixels) from ``path``: uint8 ``size x size x 3``."""
    with Image.open(path) as img:
        (w, h), rotated = displayed_size(img)
        region, out_size = _target_region(crop_box(bbox, w, h, spec.margin), spec)
        # Reduced-size decode: ask for the smallest full-image size that keeps the region at or
        # above its output resolution; draft picks a JPEG DCT scale >= that.
        scale = min(1.0, max(out_size[0] / max(region[2] - region[0], 1e-6),
                             out_size[1] / max(region[3] - region[1], 1e-6)))
        if scale < 1.0:
            img.draft("RGB", (max(1, int(img.width * scale + 1)),
                              max(1, int(img.height * scale + 1))))
        shown = ImageOps.exif_transpose(img) if rotated else img  # displayed orientation
        fx, fy = shown.size[0] / w, shown.size[1] / h
        rgb = shown.convert("RGB") if shown.mode != "RGB" else shown
        box = (region[0] * fx, region[1] * fy, region[2] * fx, region[3] * fy)
        out = rgb.resize(out_size, Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    arr = np.asarray(out, dtype=np.uint8)
    if arr.shape[:2] == (spec.size, spec.size):
        return arr
    canvas = np.full((spec.size, spec.size, 3), spec.pad_value, dtype=np.uint8)
    top, left = (spec.size - arr.shape[0]) // 2, (spec.size - arr.shape[1]) // 2
    canvas[top:top + arr.shape[0], left:left + arr.shape[1]] = arr
    return canvas


def resolve_workers(num_workers: int | None) -> int:
    """``None`` or ``0`` -> one process per available core."""
    if not num_workers:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, int(num_workers))


def parallel_map(
    fn: Callable[[T], R], items: Iterable[T], *, total: int, num_workers: int | None,
    chunksize: int = 16, desc: str = "",
) -> list[R]:
    """Ordered map over processes (fork where available) with a progress bar; serial for 1 worker."""
    workers = resolve_workers(num_workers)
    items = list(items)
    if workers == 1 or total <= chunksize:
        return [fn(x) for x in tqdm(items, total=total, desc=desc, mininterval=1.0)]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(tqdm(pool.map(fn, items, chunksize=chunksize), total=total, desc=desc,
                         mininterval=1.0))


#: shared output buffer of the running ``crop_many`` (inherited by forked workers)
_SHARED_OUT: np.ndarray | None = None


def _crop_into_shared(args: tuple[int, str, tuple[float, float, float, float], CropSpec]) -> int:
    """Worker: crop one image straight into the shared output array (nothing is pickled back)."""
    i, path, bbox, spec = args
    assert _SHARED_OUT is not None
    _SHARED_OUT[i] = crop_image(path, bbox, spec)
    return i


def crop_many(
    paths: Sequence[str], bboxes: np.ndarray, spec: CropSpec, *, num_workers: int | None = None,
    chunksize: int = 16,
) -> np.ndarray:
    """Crop every ``(path, bbox)`` into one ``N x size x size x 3`` uint8 array (input order).

    With several workers (fork start method), the array lives in anonymous shared memory that
    the forked workers write into directly: only indices cross process boundaries, so the
    parallel path scales instead of pickling every crop back to the parent.
    """
    global _SHARED_OUT
    shape = (len(paths), spec.size, spec.size, 3)
    boxes = [tuple(map(float, b)) for b in bboxes]
    workers = resolve_workers(num_workers)
    if workers > 1 and len(paths) > chunksize and "fork" in mp.get_all_start_methods():
        buffer = mmap.mmap(-1, max(1, int(np.prod(shape))))  # MAP_SHARED | MAP_ANONYMOUS
        _SHARED_OUT = np.frombuffer(buffer, dtype=np.uint8).reshape(shape)
        try:
            tasks = [(i, p, b, spec) for i, (p, b) in enumerate(zip(paths, boxes, strict=True))]
            parallel_map(_crop_into_shared, tasks, total=len(tasks), num_workers=workers,
                         chunksize=chunksize, desc="crop")
            return _SHARED_OUT.copy()
        finally:
            _SHARED_OUT = None
            buffer.close()
    out = np.empty(shape, dtype=np.uint8)
    for i, (p, b) in enumerate(tqdm(list(zip(paths, boxes, strict=True)), desc="crop",
                                    mininterval=1.0)):
        out[i] = crop_image(p, b, spec)
    return out


def naive_crop(path: str, bbox: Sequence[float], spec: CropSpec) -> np.ndarray:
    """Reference implementation (benchmarks/tests): full decode, convert, crop, resize, pad."""
    with Image.open(path) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        region, out_size = _target_region(crop_box(bbox, *rgb.size, spec.margin), spec)
        crop = rgb.crop(tuple(round(v) for v in region))
        out = np.asarray(crop.resize(out_size, Image.Resampling.BILINEAR), dtype=np.uint8)
    canvas = np.full((spec.size, spec.size, 3), spec.pad_value, dtype=np.uint8)
    top, left = (spec.size - out.shape[0]) // 2, (spec.size - out.shape[1]) // 2
    canvas[top:top + out.shape[0], left:left + out.shape[1]] = out
    return canvas


def file_paths(base: Path, rel_paths: Iterable[str]) -> list[str]:
    return [str(base / p) for p in rel_paths]
