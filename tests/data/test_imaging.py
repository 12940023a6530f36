"""Streaming crops (``crop_to_npy`` / ``CropPlan``) and pool workers that die with their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compcars_kedro.data.imaging import CropPlan, CropSpec, crop_many, crop_to_npy, parallel_map

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux")


def make_images(folder: Path, n: int, size: tuple[int, int] = (90, 60)) -> tuple[list[str], np.ndarray]:
    """``n`` small JPEGs with distinct content and a box inside each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        arr[:, :, 0] = (np.arange(size[0]) * (i + 1)) % 256
        arr[:, :, 1] = rng.integers(0, 256)
        arr[size[1] // 4:, : size[0] // 2, 2] = 255
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
    boxes = np.tile([5.0, 4.0, size[0] - 6.0, size[1] - 3.0], (n, 1))
    boxes[::3] = [0.0, 0.0, size[0], size[1]]
    return paths, boxes


@pytest.mark.parametrize("workers", [1, 2])
def test_crop_to_npy_writes_the_same_crops_as_in_memory(tmp_path: Path, workers: int) -> None:
    paths, boxes = make_images(tmp_path / "img", 23)
    spec = CropSpec(size=20, margin=0.05, resize_mode="pad")
    expected = crop_many(paths, boxes, spec, num_workers=1)
    out = crop_to_npy(paths, boxes, spec, tmp_path / "crops.npy", num_workers=workers, chunksize=4)
    got = np.load(out, mmap_mode="r")
    assert got.shape == (23, 20, 20, 3) and got.dtype == np.uint8
    assert np.array_equal(got, expected)
    assert np.array_equal(crop_many(paths, boxes, spec, num_workers=2, chunksize=4), expected)


def test_crop_plan_is_lazy_and_materialises_on_demand(tmp_path: Path) -> None:
    paths, boxes = make_images(tmp_path / "img", 5)
    spec = CropSpec(size=16)
    plan = CropPlan(tuple(paths), boxes, spec, num_workers=1)
    assert plan.shape == (5, 16, 16, 3) and plan.dtype == np.uint8 and plan.nbytes == 5 * 16 * 16 * 3
    full = np.asarray(plan)
    assert np.array_equal(plan[3], full[3]) and np.array_equal(plan[-1], full[4])
    assert np.array_equal(plan[1:3], full[1:3])
    with pytest.raises(ValueError, match="2 paths for 1 boxes"):
        CropPlan(tuple(paths[:2]), boxes[:1], spec)


def test_crop_error_names_the_file(tmp_path: Path) -> None:
    paths, boxes = make_images(tmp_path / "img", 3)
    paths[1] = str(tmp_path / "gone.jpg")
    with pytest.raises(RuntimeError, match="gone.jpg"):
        crop_to_npy(paths, boxes, CropSpec(size=8), tmp_path / "c.npy", num_workers=1)


def _pdeathsig(_: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    libc.prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return value.value


@linux_only
def test_pool_workers_are_armed_to_die_with_their_parent() -> None:
    """Validation and crop pools (both ``parallel_map``) set PR_SET_PDEATHSIG in every worker."""
    got = parallel_map(_pdeathsig, range(8), total=8, num_workers=2, chunksize=1)
    assert got == [int(signal.SIGKILL)] * 8



def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@linux_only
def test_watchdog_ends_a_worker_whose_parent_died_without_prctl(tmp_path: Path) -> None:
    """The fallback for platforms without PR_SET_PDEATHSIG: a re-parented worker exits."""
    pid_file = tmp_path / "worker.pid"
    script = f"""
import os, time
from compcars_kedro.data import imaging
imaging.WATCHDOG_INTERVAL = 0.1
parent = os.getpid()
if os.fork() == 0:
    import threading
    threading.Thread(target=imaging._watch_parent, args=(parent,), daemon=True).start()
    open({str(pid_file) + ".tmp"!r}, "w").write(str(os.getpid()))
    os.rename({str(pid_file) + ".tmp"!r}, {str(pid_file)!r})
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 30
    while not pid_file.exists():
        assert time.time() < deadline and proc.poll() is None, "worker did not start"
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.time() + 10
    while time.time() < deadline and process_running(worker):
        time.sleep(0.05)
    alive = process_running(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the watchdog did not end the orphaned worker"
