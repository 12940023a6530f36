"""Writes the sample in the CompCars on-disk layout: images, labels, misc/, the split files.

Also writes ``sample_info.json`` (not part of CompCars: the spec, the counts, the near-duplicates
and the planted broken inputs with the reason a validator should give). ``generate_sample``
writes into a temporary folder and renames it, so a failed run leaves no half sample.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image
from tqdm.auto import tqdm

from compcars_kedro.data.raw import VIEWPOINTS
from compcars_kedro.names import (
    BBOX_OUTSIDE_IMAGE,
    DECODE_ERROR,
    DEGENERATE_BBOX,
    MISSING_LABEL,
    NOT_AN_IMAGE,
)
from compcars_kedro.sample.drawing import render_image
from compcars_kedro.sample.plan import Job, plan_jobs
from compcars_kedro.sample.spec import (
    CAR_TYPES,
    GENERATOR,
    GENERATOR_VERSION,
    MAX_MAKE_ID,
    MAX_MODEL_ID,
    MakeTraits,
    ModelTraits,
    SampleSpec,
)
from compcars_kedro.sample.structure import build_structure, hex_name

logger = logging.getLogger("compcars_kedro.sample")

#: what a web server's error page saved as ``.jpg`` looks like (the ``not_an_image`` input)
NOT_AN_IMAGE_BYTES = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p>\n"
    b"<hr><address>Apache Server</address></body></html>\n"
)


def _label_text(viewpoint: int, bbox: tuple[int, int, int, int], crlf: bool) -> bytes:
    first = "\r\n" if crlf else "\n"
    x1, y1, x2, y2 = bbox
    return f"{viewpoint}{first}1\n{x1} {y1} {x2} {y2}".encode("ascii")


def _savemat_bytes(data: dict[str, Any]) -> bytes:
    """scipy.io.savemat output with the timestamped header text replaced (determinism)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, data, format="5", do_compression=False)
    raw = bytearray(buf.getvalue())
    raw[:116] = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: compcars_kedro.sample".ljust(
        116, b" "
    )
    return bytes(raw)


def _cell_column(values: dict[int, str], n: int) -> np.ndarray:
    arr = np.empty((n, 1), dtype=object)
    for i in range(n):
        arr[i, 0] = np.empty((0, 0))
    for idx, name in values.items():
        arr[idx - 1, 0] = name
    return arr


def _write_misc(
    root: Path, makes: list[MakeTraits], models: list[ModelTraits], rng: np.random.Generator
) -> None:
    misc = root / "misc"
    misc.mkdir(parents=True, exist_ok=True)
    names = {
        "make_names": _cell_column({m.make_id: m.name for m in makes}, MAX_MAKE_ID),
        "model_names": _cell_column({m.model_id: m.name for m in models}, MAX_MODEL_ID),
    }
    (misc / "make_model_name.mat").write_bytes(_savemat_bytes(names))
    types = np.empty((1, len(CAR_TYPES)), dtype=object)
    for i, t in enumerate(CAR_TYPES):
        types[0, i] = t
    (misc / "car_type.mat").write_bytes(_savemat_bytes({"types": types}))

    used = {m.model_id for m in models}
    extra_ids = [
        int(i)
        for i in rng.choice(np.arange(1, MAX_MODEL_ID + 1), 12, replace=False)
        if int(i) not in used
    ][:3]
    rows = ["model_id maximum_speed displacement door_number seat_number type"]
    entries = [(m.model_id, m.car_type) for m in models] + [
        (i, int(rng.integers(0, 13))) for i in extra_ids
    ]
    for model_id, car_type in sorted(entries):
        speed = 0 if rng.random() < 0.12 else int(rng.integers(150, 306))
        disp = (
            "0"
            if rng.random() < 0.1
            else f"{rng.choice([1.0, 1.2, 1.4, 1.5, 1.6, 1.8, 2.0, 2.4, 3.0, 3.6, 4.4]):.1f}"
        )
        doors = 0 if rng.random() < 0.08 else int(rng.choice([2, 3, 4, 5]))
        seats = 0 if rng.random() < 0.08 else int(rng.choice([2, 4, 5, 7]))
        rows.append(f"{model_id} {speed} {disp} {doors} {seats} {car_type}")
    (misc / "attributes.txt").write_bytes(("\n".join(rows) + "\n").encode("ascii"))



def _write_job(
    root: Path, spec: SampleSpec, job: Job, makes: list[MakeTraits], models: list[ModelTraits]
) -> None:
    img_path = root / "image" / job.rel
    lbl_path = root / "label" / (job.rel[: -len(".jpg")] + ".txt")
    img_path.parent.mkdir(parents=True, exist_ok=True)
    make, model = makes[job.make_idx], models[job.model_idx]
    data, bbox = render_image(
        spec, make, model, job.viewpoint, job.key, overhang_right=job.note == "clipped"
    )
    W = spec.width
    if job.reason == DECODE_ERROR:
        data = data[: int(len(data) * 0.4)]
    elif job.reason == NOT_AN_IMAGE:
        data = NOT_AN_IMAGE_BYTES
    elif job.reason == BBOX_OUTSIDE_IMAGE:
        bw = bbox[2] - bbox[0] + 1
        x1 = W - int(round(0.3 * bw))
        bbox = (x1, bbox[1], x1 + bw - 1, bbox[3])
    elif job.reason == DEGENERATE_BBOX:
        bbox = (bbox[0], bbox[1], bbox[0], bbox[3])
    if job.transform is not None:
        data, bbox = _near_duplicate(data, bbox, job.transform, spec.jpeg_quality)
    job.bbox = bbox
    img_path.write_bytes(data)
    if job.reason != MISSING_LABEL:
        lbl_path.parent.mkdir(parents=True, exist_ok=True)
        vp = job.label_viewpoint if job.label_viewpoint is not None else job.viewpoint
        lbl_path.write_bytes(_label_text(vp, bbox, job.crlf))


def _near_duplicate(
    data: bytes, bbox: tuple[int, int, int, int], transform: tuple[str, float], quality: int
) -> tuple[bytes, tuple[int, int, int, int]]:
    """The same photo re-encoded at another JPEG quality, or resized (its box scaled along)."""
    kind, value = transform
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if kind == "resize":
        w, h = (max(1, int(round(d * value))) for d in img.size)
        img = img.resize((w, h), Image.Resampling.LANCZOS)
        x1, y1, x2, y2 = bbox
        bbox = (max(1, int(round((x1 - 1) * value)) + 1), max(1, int(round((y1 - 1) * value)) + 1),
                min(w, int(round(x2 * value))), min(h, int(round(y2 * value))))
    else:
        quality = int(value)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue(), bbox


def _write_split(
    root: Path, spec: SampleSpec, jobs: list[Job], models: list[ModelTraits]
) -> dict[str, Any]:
    rng = np.random.default_rng([spec.seed, 5])
    train, test = [], []
    for job in jobs:
        (train if rng.random() < 0.7 else test).append(job.rel)
    used = {Path(j.rel).stem for j in jobs}
    missing = []
    for _ in range(2):
        m = models[int(rng.integers(len(models)))]
        missing.append(f"{m.make_id}/{m.model_id}/{m.years[0]}/{hex_name(rng, used)}.jpg")
    train.append(missing[0])
    test.append(missing[1])
    split_dir = root / "train_test_split" / "classification"
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        (split_dir / f"{name}.txt").write_bytes(("\n".join(sorted(rows)) + "\n").encode("ascii"))
    return {"train": len(train), "test": len(test), "missing_listed": missing}


def _listed(
    models: list[ModelTraits], jobs: list[Job], per_model: dict[int, dict[str, int]]
) -> dict[str, list[dict[str, Any]]]:
    """The summary's per-model counts, near-duplicates and planted files."""
    return {
        "models": [
            {
                "model_id": m.model_id,
                "make_id": m.make_id,
                "model_name": m.name,
                "years": list(m.years),
                "colours": list(m.colours),
                "car_type": m.car_type,
                "normal_by_viewpoint": per_model[m.model_id],
            }
            for m in models
        ],
        "near_duplicates": [
            {
                "path": f"image/{j.rel}",
                "source": f"image/{j.source}",
                "transform": list(j.transform) if j.transform else None,
                "viewpoint": j.viewpoint,
            }
            for j in jobs
            if j.kind == "near_duplicate"
        ],
        "planted": [
            {
                "path": f"image/{j.rel}",
                "expected_reason": j.reason,
                "note": j.note,
                "viewpoint_drawn": j.viewpoint,
                "label_bbox": list(j.bbox) if j.bbox and j.reason != MISSING_LABEL else None,
            }
            for j in jobs
            if j.kind == "planted"
        ],
    }


def _summary(
    spec: SampleSpec,
    makes: list[MakeTraits],
    models: list[ModelTraits],
    jobs: list[Job],
    split: dict[str, Any],
) -> dict[str, Any]:
    normal = [j for j in jobs if j.kind == "normal"]
    by_vp: dict[str, int] = {str(v): 0 for v in VIEWPOINTS}
    per_model: dict[int, dict[str, int]] = {
        m.model_id: {str(v): 0 for v in VIEWPOINTS} for m in models
    }
    for j in normal:
        by_vp[str(j.viewpoint)] += 1
        per_model[models[j.model_idx].model_id][str(j.viewpoint)] += 1
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "spec": asdict(spec),
        "counts": {
            "makes": len(makes),
            "models": len(models),
            "images_normal": len(normal),
            "images_planted": sum(j.kind == "planted" for j in jobs),
            "images_near_duplicate": sum(j.kind == "near_duplicate" for j in jobs),
            "images_on_disk": len(jobs),
            "normal_by_viewpoint": by_vp,
            "split_train": split["train"],
            "split_test": split["test"],
        },
        "makes": [asdict(m) for m in makes],
        **_listed(models, jobs, per_model),
        "split_missing": [f"image/{p}" for p in split["missing_listed"]],
        "notes": (
            "Normal images: per model front (1) and rear (2) counts drawn unequal (or exactly "
            "images_per_view each when set) plus extras (3/4/5/-1). near_duplicates (valid images "
            "with labels) and planted files are extra files on top of these counts. "
            "split_missing: paths listed in train/test.txt that do not exist on disk."
        ),
    }


def _load_info(out: Path) -> dict[str, Any] | None:
    p = out / "sample_info.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_all(
    root: Path, spec: SampleSpec, makes: list[MakeTraits], models: list[ModelTraits],
    jobs: list[Job],
) -> dict[str, Any]:
    """Every file of the sample into ``root``; returns the summary (also in sample_info.json)."""
    for job in tqdm(jobs, desc="sample images", unit="img", disable=None):
        _write_job(root, spec, job, makes, models)
    _write_misc(root, makes, models, np.random.default_rng([spec.seed, 6]))
    split = _write_split(root, spec, jobs, models)
    info = _summary(spec, makes, models, jobs, split)
    (root / "sample_info.json").write_text(
        json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return info


def _existing_sample(out: Path, spec: SampleSpec, overwrite: bool) -> dict | None:
    """The sample already in ``out`` when it matches ``spec`` (and not ``overwrite``), else None.

    Raises FileExistsError for a non-empty ``out`` that holds no generated sample, or one of
    another spec or generator version without ``overwrite``.
    """
    existing = _load_info(out)
    if out.exists() and any(out.iterdir()):
        if existing is None or existing.get("generator") != GENERATOR:
            raise FileExistsError(
                f"{out} is not empty and holds no generated sample; refusing to write there"
            )
        if not overwrite:
            if (
                existing.get("spec") == asdict(spec)
                and existing.get("generator_version") == GENERATOR_VERSION
            ):
                logger.info("Sample in %s already matches the spec; nothing to do", out)
                return existing
            raise FileExistsError(
                f"{out} holds a sample with a different spec or generator version; "
                "use overwrite=True (--overwrite) to replace it"
            )
    return None


def generate_sample(
    out_dir: str | Path,
    spec: SampleSpec = SampleSpec(),  # noqa: B008 - frozen dataclass, safe as a default
    *,
    overwrite: bool = False,
) -> dict:
    """Write the sample; return the summary dict that is also written to out_dir/sample_info.json.

    An existing sample with the same spec is kept as is (unless ``overwrite``). Refuses to touch
    a non-empty directory that is not a generated sample (e.g. a real CompCars copy).
    """
    out = Path(out_dir)
    existing = _existing_sample(out, spec, overwrite)
    if existing is not None:
        return existing
    makes, models = build_structure(spec)
    jobs = plan_jobs(spec, makes, models)
    logger.info(
        "Generating %d images (%d makes, %d models, %dx%d) into %s",
        len(jobs),
        len(makes),
        len(models),
        spec.width,
        spec.height,
        out,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        info = _write_all(tmp, spec, makes, models, jobs)
        if out.exists():
            if any(out.iterdir()):  # verified above: a generated sample and overwrite=True
                logger.info("Overwriting the sample in %s", out)
                shutil.rmtree(out)
            else:
                out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "Wrote %d images (%d planted) to %s",
        info["counts"]["images_on_disk"],
        info["counts"]["images_planted"],
        out,
    )
    return info

