"""Versioned folder datasets: streamed crops store, stale ``.partial`` folders, kill safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import Version

from compcars_kedro.data.imaging import CropPlan, CropSpec
from compcars_kedro.datasets import CropsStore, CropsStoreDataset, EmbeddingsDataset, EmbeddingSet
from compcars_kedro.datasets._folder import OWNER_FILE, UNOWNED_STALE_S, remove_stale_partials
from tests.data.test_imaging import make_images, process_running

ROOT = Path(__file__).resolve().parents[2]


def _store(paths: list[str], boxes: np.ndarray, size: int = 16, workers: int = 1) -> CropsStore:
    index = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(paths))], "split": "train"})
    plan = CropPlan(tuple(paths), boxes, CropSpec(size=size), num_workers=workers, chunksize=2)
    return CropsStore(images=plan, index=index, meta={"n": len(paths)})


def test_crops_store_save_streams_the_plan_into_the_version(tmp_path: Path) -> None:
    paths, boxes = make_images(tmp_path / "img", 9)
    store = _store(paths, boxes, workers=2)
    ds = CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None))
    ds.save(store)
    loaded = CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None)).load()
    assert isinstance(loaded.images, np.memmap)
    assert np.array_equal(loaded.images, np.asarray(store.images))
    assert list(loaded.index["image_id"]) == list(store.index["image_id"])
    (version,) = (tmp_path / "crops").iterdir()
    assert sorted(p.name for p in version.iterdir()) == ["crops"]  # no .partial left
    assert not (version / "crops" / OWNER_FILE).exists()


def test_failed_save_leaves_no_partial_or_empty_version(tmp_path: Path) -> None:
    paths, boxes = make_images(tmp_path / "img", 4)
    paths[2] = str(tmp_path / "missing.jpg")
    ds = CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None))
    with pytest.raises(Exception, match="missing.jpg"):
        ds.save(_store(paths, boxes))
    assert not any((tmp_path / "crops").iterdir())


def _partial(root: Path, version: str, owner: dict | None) -> Path:
    folder = root / version / f"{root.name}.partial"
    folder.mkdir(parents=True)
    (folder / "images.npy").write_bytes(b"half")
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps(owner))
    return folder


def test_only_partials_of_dead_owners_are_removed(tmp_path: Path) -> None:
    import socket

    root = tmp_path / "crops"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = socket.gethostname()
    stale = _partial(root, "v1", {"host": host, "pid": int(dead.stdout), "time": time.time()})
    live = _partial(root, "v2", {"host": host, "pid": os.getpid(), "time": time.time()})
    young = _partial(root, "v3", None)  # a save that has not written its owner yet
    old = _partial(root, "v4", None)
    past = time.time() - UNOWNED_STALE_S - 5
    os.utime(old, (past, past))
    foreign = _partial(root, "v5", {"host": host + "-other", "pid": 1, "time": time.time()})
    removed = remove_stale_partials(root, "crops")
    assert sorted(removed) == sorted([stale, old])
    assert not (root / "v1").exists() and not (root / "v4").exists()  # empty versions too
    assert live.exists() and young.exists() and foreign.exists()


def test_embeddings_are_written_as_float32_without_a_second_copy(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(7, 5))  # float64 -> converted per block
    index = pd.DataFrame({"sample_id": list("abcdefg")})
    ds = EmbeddingsDataset(path=str(tmp_path / "emb"), version=Version(None, None))
    ds.save(EmbeddingSet(vectors[::1], index))
    got = EmbeddingsDataset(path=str(tmp_path / "emb"), version=Version(None, None)).load()
    assert got.vectors.dtype == np.float32 and np.allclose(got.vectors, vectors, atol=1e-6)


def test_embedding_plan_streams_extraction_into_the_file(tmp_path: Path) -> None:
    import torch

    from compcars_kedro.datasets.embeddings import EmbeddingPlan
    from compcars_kedro.training import ModelConfig, build_model, extract_embeddings
    from compcars_kedro.training.toy import TINY_ARCH, make_toy_data

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="vitb32", image_size=32, arch=TINY_ARCH["vitb32"]),
                        num_classes=3, load_weights=False)
    data = make_toy_data(3, 3, 32, 1, seed=1)
    direct = extract_embeddings(model, data, batch_size=4, device="cpu", progress=False)
    plan = EmbeddingPlan(model, data, batch_size=4, options={"progress": False})
    ds = EmbeddingsDataset(path=str(tmp_path / "emb"), version=Version(None, None))
    ds.save(EmbeddingSet(plan, pd.DataFrame({"i": range(len(data))})))
    got = EmbeddingsDataset(path=str(tmp_path / "emb"), version=Version(None, None)).load()
    assert got.vectors.shape == direct.shape and np.allclose(got.vectors, direct, atol=1e-6)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")
def test_sigkilled_crop_stage_leaves_no_worker_and_next_save_cleans_up(tmp_path: Path) -> None:
    paths, boxes = make_images(tmp_path / "img", 8)
    many = paths * 400  # 3,200 crops: long enough to be killed half-way
    (tmp_path / "job.json").write_text(json.dumps({"paths": many, "boxes": np.tile(
        boxes, (400, 1)).tolist()}))
    script = textwrap.dedent(f"""
        import json, numpy as np, pandas as pd
        from kedro.io.core import Version
        from compcars_kedro.data.imaging import CropPlan, CropSpec
        from compcars_kedro.datasets import CropsStore, CropsStoreDataset
        job = json.load(open({str(tmp_path / 'job.json')!r}))
        plan = CropPlan(tuple(job["paths"]), np.array(job["boxes"]), CropSpec(size=32),
                        num_workers=2, chunksize=1)
        index = pd.DataFrame({{"image_id": [str(i) for i in range(len(plan))]}})
        CropsStoreDataset(path={str(tmp_path / 'crops')!r}, version=Version(None, None)).save(
            CropsStore(images=plan, index=index))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    workers: list[int] = []
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        partial = list((tmp_path / "crops").glob("*/crops.partial/images.npy"))
        workers = _children(proc.pid)
        if partial and len(workers) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "crop stage did not start its workers"
    time.sleep(0.3)  # let them crop a little
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.time() + 10
    while time.time() < deadline and any(process_running(w) for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if process_running(w)], "pool workers outlived the killed parent"
    (stale,) = list((tmp_path / "crops").glob("*/crops.partial"))

    ds = CropsStoreDataset(path=str(tmp_path / "crops"), version=Version(None, None))
    ds.save(_store(paths, boxes))
    assert not stale.exists() and not stale.parent.exists()
    assert [p.name for p in (tmp_path / "crops").glob("*/*")] == ["crops"]
