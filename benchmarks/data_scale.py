"""Data stage at CompCars scale: time and peak memory per stage, streaming crops vs today's.

    python benchmarks/data_scale.py --images 3000 [--size 224] [--out .cache/bench]

Generates (once, cached under ``--out``) a CompCars-layout tree of N JPEGs of about 900x650 with
real-sized boxes (~80-95% of the image, 45% front / 45% rear / 10% side; any content: 48 distinct
JPEGs of ~120 KB copied under distinct names and boxes), then runs the data_engineering nodes with
the ``compcars`` environment's parameters (224 px crops) and prints, per stage (parse, validate,
split, crop): wall time, the parent's peak RSS (``VmHWM``, reset per stage: what
``/usr/bin/time`` reports for ``kedro run``) and the peak PSS of the whole process tree (parent +
pool workers, sampled every 0.2 s: shared pages counted once).

``validate`` decodes each image once for the decode check and the perceptual hash of its box
(``image_hashes``). For comparison, in this process and on the same (page-cached) files,
``validate (old)`` is the same node with the check-only decode of before the near-duplicate
hashes (``check_decodes`` at 1/8 scale, no hash) and ``hash (old)`` the separate second decode
that hashed the kept images (``crop_hash``, the former ``hash_images`` node); the benchmark
checks that both paths give the same rejected rows and the same hashes, bit for bit.
``--skip-old-decode`` skips them.

The crop stage runs twice on the same images, in this process: ``crop (today)`` is the
implementation before the streaming store (crops into anonymous shared memory, ``.copy()``,
``np.save``), ``crop (stream)`` is ``crop_images`` + ``CropsStoreDataset.save`` (workers write
each crop into ``images.npy`` in the version's partial folder). Dirty pages are flushed
(``os.sync``, not timed) before each crop run so neither pays for the other's write-back.
Written data sits in the kernel's page cache (reclaimable), which is not process memory.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import mmap
import multiprocessing as mp
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from compcars_kedro.data.dedup import crop_hash
from compcars_kedro.data.imaging import (
    CropSpec,
    check_decodes,
    crop_image,
    parallel_map,
    resolve_workers,
)
from compcars_kedro.data.raw import detect_source
from compcars_kedro.datasets import CropsStoreDataset
from compcars_kedro.pipelines.data_engineering import nodes as de_nodes
from compcars_kedro.pipelines.data_engineering.nodes import (
    crop_images,
    parse_raw,
    split_dataset,
    validate_images,
)

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(900, 650), (880, 660), (960, 640), (850, 600), (1000, 700), (800, 600), (920, 690)]
VIEWS = ([1] * 9) + ([2] * 9) + [3, 3]  # front, rear, side


# --------------------------------------------------------------------------- tree generation

def _base_images(rng: np.random.Generator, k: int) -> list[tuple[bytes, tuple[int, int]]]:
    """``k`` distinct JPEGs (smooth blocks + noise: ~60-90 KB at 900x650, like photos)."""
    out = []
    for i in range(k):
        w, h = SIZES[i % len(SIZES)]
        small = rng.integers(0, 256, size=(h // 40 + 1, w // 40 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, size=(h, w, 3))
        bio = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(bio, "JPEG", quality=85)
        out.append((bio.getvalue(), (w, h)))
    return out


def _write_names(misc: Path, n_makes: int, n_models: int) -> None:
    import scipy.io

    def cells(names: list[str]) -> np.ndarray:
        arr = np.empty((len(names), 1), dtype=object)
        for i, name in enumerate(names):
            arr[i, 0] = name
        return arr

    misc.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(misc / "make_model_name.mat", {
        "make_names": cells([f"Make{i}" for i in range(1, n_makes + 1)]),
        "model_names": cells([f"Model{i}" for i in range(1, n_models + 1)]),
    })


def generate_tree(root: Path, n: int, seed: int = 0) -> Path:
    """CompCars layout ``image/<make>/<model>/<year>/<id>.jpg`` + ``label/...txt`` + ``misc``."""
    done = root / "tree.json"
    if done.exists() and json.loads(done.read_text()).get("images") == n \
            and json.loads(done.read_text()).get("layout") == 2:
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    bases = _base_images(rng, 48)
    per_model = 100
    n_models = max(4, -(-n // per_model))
    n_makes = max(1, n_models // 10)
    _write_names(root / "misc", n_makes, n_models)
    t0 = time.perf_counter()
    for i in range(n):
        model = i % n_models + 1
        make = (model - 1) % n_makes + 1
        year = 2010 + (i // n_models) % 2
        rel = f"{make}/{model}/{year}/{i:07x}"
        data, (w, h) = bases[int(rng.integers(len(bases)))]
        x0, x1 = int(w * rng.uniform(0.02, 0.12)) + 1, int(w * rng.uniform(0.88, 0.98))
        y0, y1 = int(h * rng.uniform(0.05, 0.20)) + 1, int(h * rng.uniform(0.80, 0.97))
        img = root / "image" / f"{rel}.jpg"
        label = root / "label" / f"{rel}.txt"
        img.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        img.write_bytes(data)
        view = VIEWS[(i // n_models) % len(VIEWS)]  # every model gets the 45/45/10 mix
        label.write_text(f"{view}\n1\n{x0} {y0} {x1} {y1}\n")
    done.write_text(json.dumps({"images": n, "layout": 2, "seconds": round(time.perf_counter() - t0, 1)}))
    return root


# --------------------------------------------------------------------------- memory probes

def _status_kb(pid: int | str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


class Probe:
    """Peak parent RSS (VmHWM, reset at start) and sampled peak PSS of the process tree."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak_pss_kb = interval, 0
        self._stop = threading.Event()

    def __enter__(self) -> Probe:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(p) for p in _tree(os.getpid())))
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak_rss_kb = _status_kb("self", "VmHWM")


# --------------------------------------------------------------------------- today's crop stage

_TODAY_OUT: np.ndarray | None = None


def _today_task(args: tuple) -> int:
    i, path, bbox, spec = args
    assert _TODAY_OUT is not None
    _TODAY_OUT[i] = crop_image(path, bbox, spec)
    return i


def today_crop_and_save(image_splits, raw, params: dict, folder: Path) -> None:
    """The crop stage before the streaming store (kept here for comparison): every crop in
    anonymous shared memory, ``.copy()`` for the store, then ``np.save``."""
    global _TODAY_OUT
    crop = params["crop"]
    spec = CropSpec(size=crop["size"], margin=crop["margin"], resize_mode=crop["resize_mode"])
    paths = [str(raw.resolve(x)) for x in image_splits["path"]]
    boxes = [tuple(map(float, b)) for b in image_splits[["x0", "y0", "x1", "y1"]].to_numpy()]
    shape = (len(paths), spec.size, spec.size, 3)
    buffer = mmap.mmap(-1, max(1, int(np.prod(shape))))
    _TODAY_OUT = np.frombuffer(buffer, dtype=np.uint8).reshape(shape)
    try:
        tasks = [(i, p, b, spec) for i, (p, b) in enumerate(zip(paths, boxes, strict=True))]
        parallel_map(_today_task, tasks, total=len(tasks), num_workers=crop["num_workers"],
                     chunksize=crop["chunksize"], desc="crop (today)")
        images = _TODAY_OUT.copy()
    finally:
        _TODAY_OUT = None
        buffer.close()
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", np.ascontiguousarray(images))
    image_splits.reset_index(drop=True).to_parquet(folder / "index.parquet", index=False)
    del images


# --------------------------------------------------------------------------- two decodes (before)

def _check_only(paths, boxes, *, method, hash_size, num_workers):
    """The validation decode before the hashes moved into it: ``check_decodes``, no hash."""
    errors = parallel_map(check_decodes, list(paths), total=len(paths), num_workers=num_workers,
                          chunksize=32, desc="validate (old)")
    return [(err, None) for err in errors]


def old_validate(manifest, raw, params: dict):
    """``validate_images`` as it was before: the same node with the check-only decode."""
    real = de_nodes.check_and_hash_many
    de_nodes.check_and_hash_many = _check_only
    try:
        return validate_images(manifest, raw, params)
    finally:
        de_nodes.check_and_hash_many = real


def old_hash(valid, raw, params: dict) -> list[str]:
    """The former ``hash_images`` node's work: a second decode of every kept image."""
    dedup = params["dedup"]
    rows = valid.loc[valid["viewpoint"].isin(params["viewpoints"])]
    tasks = [(str(raw.resolve(p)), tuple(map(float, b)), dedup["method"], dedup["hash_size"])
             for p, b in zip(rows["path"], rows[["x0", "y0", "x1", "y1"]].to_numpy(), strict=True)]
    return parallel_map(crop_hash, tasks, total=len(tasks), num_workers=params["num_workers"],
                        chunksize=32, desc="hash (old)")


def _warm_page_cache(raw, paths) -> None:
    """Read every image once (untimed) so the first decode stage does not pay for the disk."""
    for p in paths:
        with open(raw.resolve(p), "rb") as f:
            while f.read(1 << 20):
                pass


# --------------------------------------------------------------------------- run

def _params() -> dict:
    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    base = yaml.safe_load((ROOT / "conf/base/parameters_data_engineering.yml").read_text())
    env = yaml.safe_load((ROOT / "conf/compcars/parameters_data_engineering.yml").read_text())
    return merge(base, env)["data_engineering"]


def _gb(kb: float) -> str:
    return f"{kb / 1e6:6.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    ap.add_argument("--skip-today", action="store_true", help="only the streaming crop stage")
    ap.add_argument("--keep", action="store_true", help="keep the crops stores")
    ap.add_argument("--skip-old-decode", action="store_true",
                    help="skip the two-decode comparison (old validate + separate hash)")
    args = ap.parse_args()

    params = _params()
    params["crop"]["size"] = args.size
    params["num_workers"] = params["crop"]["num_workers"] = args.workers
    root = generate_tree(args.out / f"compcars_{args.images}", args.images)
    work = args.out / f"stores_{args.images}"
    shutil.rmtree(work, ignore_errors=True)
    print(f"load before: {os.getloadavg()}, workers: {resolve_workers(args.workers)}, "
          f"start method: {mp.get_start_method()}")

    raw = detect_source(root)
    rows: list[tuple[str, Probe]] = []

    def stage(name: str, fn: Callable[[], object]) -> object:
        gc.collect()
        with Probe() as probe:
            result = fn()
        rows.append((name, probe))
        print(f"  {name:<15} {probe.seconds:8.1f} s  parent RSS {_gb(probe.peak_rss_kb)}  "
              f"tree PSS {_gb(probe.peak_pss_kb)}", flush=True)
        return result

    manifest = stage("parse", lambda: parse_raw(raw))
    _warm_page_cache(raw, manifest.loc[manifest["exists"].astype(bool), "path"])
    if not args.skip_old_decode:  # old check, new one-decode, old hash: load drift shared
        valid_old, rejected_old, _ = stage("validate (old)",
                                           lambda: old_validate(manifest, raw, params))
    valid, rejected, hashes = stage("validate", lambda: validate_images(manifest, raw, params))
    if not args.skip_old_decode:  # one decode gives what two gave, bit for bit
        hashes_old = stage("hash (old)", lambda: old_hash(valid_old, raw, params))
        assert valid.equals(valid_old) and rejected.equals(rejected_old)
        assert list(hashes["hash"]) == list(hashes_old), "hashes differ"
        del valid_old, rejected_old, hashes_old
    image_splits = stage("split", lambda: split_dataset(valid, params, hashes))[0]
    n = len(image_splits)
    store_gb = n * args.size * args.size * 3 / 1e9

    need_kb = 2.3 * store_gb * 1e6 + 1e6
    if not args.skip_today and _status_kb("self", "VmRSS") + need_kb > _meminfo_kb():
        print(f"  skipping crop (today): it needs ~{need_kb / 1e6:.1f} GB, "
              f"{_meminfo_kb() / 1e6:.1f} GB available")
        args.skip_today = True
    if not args.skip_today:
        os.sync()
        stage("crop (today)", lambda: today_crop_and_save(image_splits, raw, params,
                                                          work / "today"))
        shutil.rmtree(work / "today")
    os.sync()
    ds = CropsStoreDataset(path=str(work / "crops"))
    stage("crop (stream)", lambda: ds.save(crop_images(image_splits, raw, params)))
    loaded = CropsStoreDataset(path=str(work / "crops")).load()
    assert loaded.images.shape == (n, args.size, args.size, 3)
    sample = np.linspace(0, n - 1, num=min(n, 8)).astype(int)
    for i in sample:  # the streamed store holds the right crops
        row = image_splits.iloc[int(i)]
        spec = CropSpec(size=args.size, margin=params["crop"]["margin"],
                        resize_mode=params["crop"]["resize_mode"])
        expected = crop_image(str(raw.resolve(row["path"])),
                              tuple(row[["x0", "y0", "x1", "y1"]].astype(float)), spec)
        assert np.array_equal(loaded.images[int(i)], expected), f"crop {i} differs"
    del loaded
    if not args.keep:
        shutil.rmtree(work)

    by = dict(rows)
    print(f"\n{args.images} images, {n} crops of {args.size} px: crops store {store_gb:.2f} GB; "
          f"load after: {os.getloadavg()}")
    print(f"{'stage':<15}{'time s':>9}{'s / 10k img':>13}{'parent RSS':>12}{'tree PSS':>11}"
          f"{'RSS / store':>13}")
    for name, p in rows:
        print(f"{name:<15}{p.seconds:9.1f}{p.seconds * 1e4 / args.images:13.1f}"
              f"{p.peak_rss_kb / 1e6:10.2f}GB{p.peak_pss_kb / 1e6:9.2f}GB"
              f"{p.peak_rss_kb / 1e6 / store_gb:13.2f}")

    def total(*names: str) -> float:
        return sum(by[x].seconds for x in names)

    def peak(*names: str) -> float:
        return max(by[x].peak_rss_kb for x in names)

    now = ("parse", "validate", "split", "crop (stream)")
    print(f"data stage now (one decode for check + hash, streamed crops): {total(*now):.1f} s, "
          f"peak parent RSS {_gb(peak(*now))} ({peak(*now) / 1e6 / store_gb:.2f}x the store)")
    if "validate (old)" in by:
        two = ("parse", "validate (old)", "hash (old)", "split", "crop (stream)")
        print(f"data stage, two decodes (check, then hash), streamed crops: {total(*two):.1f} s")
        print(f"ratios one / two decodes: validate+hash "
              f"{total('validate') / total('validate (old)', 'hash (old)'):.2f}, "
              f"data stage {total(*now) / total(*two):.2f}")
    if "crop (today)" in by and "validate (old)" in by:
        pre = ("parse", "validate (old)", "split", "crop (today)")
        print(f"data stage before #12 (check only, no hash, crops in memory): {total(*pre):.1f} s, "
              f"peak parent RSS {_gb(peak(*pre))}")
        print(f"ratio now / before #12: data stage time {total(*now) / total(*pre):.2f}, "
              f"peak parent RSS {peak(*now) / peak(*pre):.2f}")
    if "crop (today)" in by:
        stream, today = by["crop (stream)"], by["crop (today)"]
        print(f"ratios crop stream / today: time {stream.seconds / today.seconds:.2f}, "
              f"parent RSS {stream.peak_rss_kb / today.peak_rss_kb:.2f}, "
              f"tree PSS {stream.peak_pss_kb / max(today.peak_pss_kb, 1):.2f}")


def _meminfo_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 1 << 40


if __name__ == "__main__":
    main()
