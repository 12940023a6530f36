"""Image decoding checks and bbox cropping, parallel over processes.

Cropping uses Pillow's reduced-size JPEG decoding (``Image.draft``): libjpeg decodes at 1/2, 1/4
or 1/8 scale directly when the crop is downscaled anyway, which is where most of the speed-up
over a naive ``open -> convert -> crop -> resize`` loop comes from.

Boxes are in *displayed* pixels: the EXIF orientation (``ImageOps.exif_transpose``) is applied
before cropping, as it is for the sizes recorded in the manifest.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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


# --------------------------------------------------------------------------- worker lifecycle

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: seconds between two checks of the fallback watchdog
WATCHDOG_INTERVAL = 1.0


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_INTERVAL)
        if os.getppid() != parent_pid:  # re-parented: the pool's owner is gone
            os._exit(1)


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: make this worker process exit when ``parent_pid`` dies.

    On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel kill the worker as soon as its
    parent exits, even by SIGKILL (the signal fires when the *thread* that started the worker
    ends: pools here are created and used by one thread). Everywhere, a daemon thread also
    polls ``os.getppid()`` every :data:`WATCHDOG_INTERVAL` seconds and exits once the worker has
    been re-parented; the check right after ``prctl`` covers a parent that died before it ran.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: watchdog only
            pass
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog",
                     daemon=True).start()


def _init_worker(parent_pid: int, initializer: Callable[..., None] | None,
                 initargs: tuple) -> None:
    exit_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def parallel_map(
    fn: Callable[[T], R], items: Iterable[T], *, total: int, num_workers: int | None,
    chunksize: int = 16, desc: str = "", initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> list[R]:
    """Ordered map over processes (fork where available) with a progress bar; serial for 1 worker.

    Workers exit when the calling process dies (:func:`exit_with_parent`); ``initializer`` runs
    once in each worker after that, or once in-process on the serial path.
    """
    workers = resolve_workers(num_workers)
    items = list(items)
    if workers == 1 or total <= chunksize:
        if initializer is not None:
            initializer(*initargs)
        return [fn(x) for x in tqdm(items, total=total, desc=desc, mininterval=1.0)]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(), initializer, initargs)) as pool:
        return list(tqdm(pool.map(fn, items, chunksize=chunksize), total=total, desc=desc,
                         mininterval=1.0))


# --------------------------------------------------------------------------- cropping

#: where the running crop job's workers put their crops (set in the parent before forking, or
#: by :func:`_open_npy_sink` in each worker)
_SINK: Any = None


class _FileSink:
    """Positional writes into a ``.npy`` file whose header and size are already written: no
    mapping, so a worker's memory stays one crop whatever the number of images."""

    def __init__(self, path: str, offset: int, item_bytes: int) -> None:
        self.fd = os.open(path, os.O_WRONLY)
        self.offset, self.item_bytes = offset, item_bytes

    def put(self, i: int, crop: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(crop)).cast("B")
        assert len(data) == self.item_bytes
        pos, done = self.offset + i * self.item_bytes, 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], pos + done)


class _ArraySink:
    def __init__(self, out: np.ndarray) -> None:
        self.out = out

    def put(self, i: int, crop: np.ndarray) -> None:
        self.out[i] = crop


def _open_npy_sink(path: str, offset: int, item_bytes: int) -> None:
    global _SINK
    _SINK = _FileSink(path, offset, item_bytes)


def _crop_task(args: tuple[int, str, tuple[float, float, float, float], CropSpec]) -> int:
    """Worker: crop one image into the current sink (only the index travels back)."""
    i, path, bbox, spec = args
    try:
        crop = crop_image(path, bbox, spec)
    except Exception as exc:
        raise RuntimeError(f"cropping {path} (box {bbox}): {type(exc).__name__}: {exc}") from exc
    _SINK.put(i, crop)
    return i


def _crop_tasks(paths: Sequence[str], bboxes: np.ndarray | Sequence[Sequence[float]],
                spec: CropSpec) -> list[tuple]:
    if len(paths) != len(bboxes):
        raise ValueError(f"{len(paths)} paths for {len(bboxes)} boxes")
    return [(i, str(p), tuple(map(float, b)), spec)
            for i, (p, b) in enumerate(zip(paths, bboxes, strict=True))]


def crop_many(
    paths: Sequence[str], bboxes: np.ndarray, spec: CropSpec, *, num_workers: int | None = None,
    chunksize: int = 16,
) -> np.ndarray:
    """Crop every ``(path, bbox)`` into one in-memory ``N x size x size x 3`` uint8 array.

    With several workers (fork start method), the array lives in anonymous shared memory that
    the forked workers write into directly and is returned as is (no copy). Use
    :func:`crop_to_npy` to write a store whose size exceeds memory.
    """
    global _SINK
    shape = (len(paths), spec.size, spec.size, 3)
    tasks = _crop_tasks(paths, bboxes, spec)
    workers = resolve_workers(num_workers)
    if workers > 1 and len(tasks) > chunksize and "fork" in mp.get_all_start_methods():
        buffer = mmap.mmap(-1, max(1, int(np.prod(shape))))  # MAP_SHARED | MAP_ANONYMOUS
        out = np.frombuffer(buffer, dtype=np.uint8, count=int(np.prod(shape))).reshape(shape)
    else:
        out, workers = np.empty(shape, dtype=np.uint8), 1
    _SINK = _ArraySink(out)
    try:
        parallel_map(_crop_task, tasks, total=len(tasks), num_workers=workers,
                     chunksize=chunksize, desc="crop")
    finally:
        _SINK = None
    return out


def crop_to_npy(
    paths: Sequence[str], bboxes: np.ndarray, spec: CropSpec, path: str | Path, *,
    num_workers: int | None = None, chunksize: int = 16,
) -> Path:
    """Stream every crop into the ``.npy`` file ``path`` (``N x size x size x 3`` uint8).

    The header and the (sparse) file size are written first with
    ``numpy.lib.format.open_memmap``; then each worker writes its crops at their offsets with
    ``os.pwrite``. Nothing of size N is held in memory by the parent or a worker: peak memory
    is the workers' decoders, whatever the number of images (written data sits in the kernel's
    page cache until it is flushed, which is not process memory).
    """
    path = Path(path)
    shape = (len(paths), spec.size, spec.size, 3)
    tasks = _crop_tasks(paths, bboxes, spec)
    if not tasks:
        np.save(path, np.empty(shape, dtype=np.uint8))
        return path
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = int(header.offset)
    del header  # unmapped: only the header and the file length were written
    item = spec.size * spec.size * 3
    global _SINK
    try:
        parallel_map(_crop_task, tasks, total=len(tasks), num_workers=num_workers,
                     chunksize=chunksize, desc="crop", initializer=_open_npy_sink,
                     initargs=(str(path), offset, item))
    finally:
        if isinstance(_SINK, _FileSink):  # serial path: the sink was opened in-process
            os.close(_SINK.fd)
        _SINK = None
    return path


@dataclass(frozen=True, eq=False)
class CropPlan:
    """What to crop, not the crops: executed when the crops store is saved.

    ``write_npy(path)`` streams the crops into a ``.npy`` file (:func:`crop_to_npy`);
    ``np.asarray(plan)`` / ``plan[i]`` crop in memory (tests, small sets). ``shape``, ``dtype``
    and ``ndim`` describe the array it produces.
    """

    paths: tuple[str, ...]
    boxes: np.ndarray = field(repr=False)
    spec: CropSpec
    num_workers: int | None = None
    chunksize: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        boxes = np.asarray(self.boxes, dtype=float).reshape(-1, 4)
        if len(boxes) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths for {len(boxes)} boxes")
        object.__setattr__(self, "boxes", boxes)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.spec.size, self.spec.size, 3)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.paths)

    def write_npy(self, path: str | Path) -> Path:
        return crop_to_npy(self.paths, self.boxes, self.spec, path,
                           num_workers=self.num_workers, chunksize=self.chunksize)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = crop_many(self.paths, self.boxes, self.spec, num_workers=self.num_workers,
                        chunksize=self.chunksize)
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            return crop_image(self.paths[i], tuple(self.boxes[i]), self.spec)
        rows = np.arange(len(self))[key]
        return crop_many([self.paths[i] for i in rows], self.boxes[rows], self.spec,
                         num_workers=self.num_workers, chunksize=self.chunksize)


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
