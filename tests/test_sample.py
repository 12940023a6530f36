"""Tests of the deterministic CompCars-layout sample generator."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image, UnidentifiedImageError

from compcars_kedro.sample import (
    CAR_TYPES,
    PLANTED_REASONS,
    TINY,
    SampleSpec,
    generate_sample,
    main,
)
from compcars_kedro.sample.plan import plan_jobs, view_counts
from compcars_kedro.sample.structure import build_structure

# 24 models like the default spec, but smaller/fewer images so the test stays fast.
MEDIUM = SampleSpec(
    images_per_view=8, width=160, height=120, extra_view_fraction=0.0, broken=False, seed=3
)
HEX14 = re.compile(r"^[0-9a-f]{14}$")
MICRO = SampleSpec(n_makes=3, models_per_make=1, images_per_view=2, width=64, height=48)


# ----------------------------------------------------------------------------- helpers


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_label(path: Path) -> tuple[int, int, tuple[int, int, int, int], bytes]:
    raw = path.read_bytes()
    lines = raw.decode("ascii").replace("\r\n", "\n").split("\n")
    assert len(lines) == 3, (path, raw)
    x1, y1, x2, y2 = (int(v) for v in lines[2].split())
    return int(lines[0]), int(lines[1]), (x1, y1, x2, y2), raw


def _label_for(root: Path, rel_image: str) -> Path:
    return root / "label" / (rel_image[: -len(".jpg")] + ".txt")


def _normal_labels(root: Path, info: dict) -> dict[str, tuple]:
    """rel image path (relative to image/) -> parsed label, planted files and near-duplicates
    excluded."""
    planted = {p["path"] for p in info["planted"] + info["near_duplicates"]}
    out = {}
    for lbl in sorted((root / "label").rglob("*.txt")):
        rel = lbl.relative_to(root / "label").with_suffix(".jpg").as_posix()
        if f"image/{rel}" not in planted:
            out[rel] = _read_label(lbl)
    return out


def _features(root: Path, info: dict, viewpoints: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Mean RGB of the bbox crop, gradient-magnitude thumbnail, model id, viewpoint."""
    cols, shapes, ys, vps = [], [], [], []
    for rel, (vp, _, (x1, y1, x2, y2), _) in _normal_labels(root, info).items():
        if vp not in viewpoints:
            continue
        crop = Image.open(root / "image" / rel).convert("RGB").crop((x1 - 1, y1 - 1, x2, y2))
        cols.append(np.asarray(crop, dtype=np.float32).reshape(-1, 3).mean(0))
        g = np.asarray(
            crop.convert("L").resize((24, 16), Image.Resampling.BILINEAR), dtype=np.float32
        )
        mag = np.hypot(np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1]).ravel()
        shapes.append((mag - mag.mean()) / (mag.std() + 1e-6))
        ys.append(int(rel.split("/")[1]))
        vps.append(vp)
    return np.array(cols), np.array(shapes), np.array(ys), np.array(vps)


def _loo_1nn(x: np.ndarray, y: np.ndarray) -> float:
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((y[d.argmin(1)] == y).mean())


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tiny_sample: Path) -> tuple[Path, dict]:
    """The session-wide TINY sample of conftest.py and its summary."""
    return tiny_sample, json.loads((tiny_sample / "sample_info.json").read_text())


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("medium") / "data"
    return root, generate_sample(root, MEDIUM)


# ----------------------------------------------------------------------------- tests


def test_summary_and_top_level_layout(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    assert info["spec"] == asdict(TINY)
    assert info["counts"]["makes"] == 3 and info["counts"]["models"] == 6
    assert {p.name for p in root.iterdir()} == {
        "image",
        "label",
        "misc",
        "train_test_split",
        "sample_info.json",
    }
    n_jpg = len(list((root / "image").rglob("*.jpg")))
    n_dup = info["counts"]["images_near_duplicate"]
    assert n_dup == len(info["near_duplicates"]) >= 1
    assert n_jpg == info["counts"]["images_on_disk"] == info["counts"]["images_normal"] + 7 + n_dup


def test_same_spec_is_byte_identical_and_seed_matters(
    tiny: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = tiny
    again = generate_sample(tmp_path / "again", TINY)
    assert _hashes(tmp_path / "again") == _hashes(root)
    assert again == json.loads((root / "sample_info.json").read_text())

    other = replace(TINY, seed=1, broken=False)
    info = generate_sample(tmp_path / "seed1", other)
    h_other = _hashes(tmp_path / "seed1")
    images = {v for k, v in _hashes(root).items() if k.startswith("image/")}
    assert not images & {v for k, v in h_other.items() if k.startswith("image/")}
    assert info["planted"] == []
    # a clean sample: every image decodes and has a valid label
    for rel, (vp, _, (x1, y1, x2, y2), _) in _normal_labels(tmp_path / "seed1", info).items():
        Image.open(tmp_path / "seed1" / "image" / rel).load()
        assert vp in (-1, 1, 2, 3, 4, 5)
        assert 1 <= x1 < x2 <= other.width and 1 <= y1 < y2 <= other.height
    assert len(_normal_labels(tmp_path / "seed1", info)) == (
        info["counts"]["images_on_disk"] - info["counts"]["images_near_duplicate"])


def test_folder_layout_ids_years_and_names(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    make_ids = sorted(m["make_id"] for m in info["makes"])
    model_ids = sorted(m["model_id"] for m in info["models"])
    assert all(1 <= i <= 163 for i in make_ids) and all(1 <= i <= 2004 for i in model_ids)
    assert len(set(model_ids)) == len(model_ids)
    # ids are drawn, not 1..n
    assert make_ids != list(range(1, len(make_ids) + 1))
    assert model_ids != list(range(1, len(model_ids) + 1))
    assert sorted(int(p.name) for p in (root / "image").iterdir()) == make_ids

    years = set()
    for jpg in (root / "image").rglob("*.jpg"):
        make, model, year, name = jpg.relative_to(root / "image").parts
        assert HEX14.match(jpg.stem), name
        assert int(model) in model_ids and int(make) in make_ids
        assert year == "unknown" or (len(year) == 4 and 2005 <= int(year) <= 2015)
        years.add(year)
    assert "unknown" in years
    for m in info["models"]:
        on_disk = {
            p.name for p in (root / "image" / str(m["make_id"]) / str(m["model_id"])).iterdir()
        }
        assert 1 <= len(on_disk) <= 3 and on_disk == set(m["years"])


def test_label_files(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    labels = _normal_labels(root, info)
    assert labels
    n_crlf = 0
    for rel, (vp, n_boxes, (x1, y1, x2, y2), raw) in labels.items():
        assert vp in (-1, 1, 2, 3, 4, 5) and n_boxes == 1
        assert 1 <= x1 < x2 <= TINY.width and 1 <= y1 < y2 <= TINY.height, rel
        # the car is a sizeable part of the image
        assert 0.3 * TINY.width <= x2 - x1 + 1 <= 0.9 * TINY.width
        if b"\r" in raw:
            n_crlf += 1
            assert raw.count(b"\r\n") == 1 and raw.split(b"\n", 1)[0].endswith(b"\r")
        img = Image.open(root / "image" / rel)
        assert img.format == "JPEG" and img.size == (TINY.width, TINY.height)
    assert 0.15 <= n_crlf / len(labels) <= 0.55


def test_counts_per_model_and_view(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    counts: dict[tuple[int, int], int] = {}
    for rel, (vp, *_rest) in _normal_labels(root, info).items():
        model = int(rel.split("/")[1])
        counts[model, vp] = counts.get((model, vp), 0) + 1
    fronts, rears = [], []
    for m in info["models"]:
        mid = m["model_id"]
        n_front, n_rear = counts.get((mid, 1), 0), counts.get((mid, 2), 0)
        assert TINY.min_per_view <= min(n_front, n_rear) <= max(n_front, n_rear) <= TINY.max_per_view
        extras = sum(counts.get((mid, v), 0) for v in (-1, 3, 4, 5))
        assert extras == round(TINY.extra_view_fraction * (n_front + n_rear))
        assert m["normal_by_viewpoint"]["1"] == n_front and m["normal_by_viewpoint"]["2"] == n_rear
        fronts.append(n_front)
        rears.append(n_rear)
    # unequal views, either view the larger one, unequal class sizes
    assert any(f > r for f, r in zip(fronts, rears, strict=True)) and any(r > f for f, r in zip(fronts, rears, strict=True))
    assert len(set(np.add(fronts, rears))) > 2
    by_vp = info["counts"]["normal_by_viewpoint"]
    assert by_vp["1"] == sum(fronts) and by_vp["2"] == sum(rears)


def test_default_spec_draws_realistic_view_counts() -> None:
    """Per model: front:rear ratio 1..4 with median ~1.3, 5..60 per view; total like before."""
    spec = SampleSpec()
    makes, models = build_structure(spec)
    counts = np.array(view_counts(spec, np.random.default_rng([spec.seed, 7]), len(models)))
    ratio = counts.max(1) / counts.min(1)
    assert 1.15 <= np.median(ratio) <= 1.5 and 2.5 <= ratio.max() <= 4.0
    assert counts.min() >= 5 and counts.max() <= 60 and counts.sum(1).max() > 3 * counts.sum(1).min()
    assert (counts[:, 0] > counts[:, 1]).sum() >= 5 and (counts[:, 1] > counts[:, 0]).sum() >= 5
    jobs = plan_jobs(spec, makes, models)
    assert 1100 <= len(jobs) <= 1400  # the default run's cost stays where it was (1,327 before)
    assert sum(j.kind == "near_duplicate" for j in jobs) >= 20


def test_near_duplicates_are_the_same_photo(tmp_path: Path) -> None:
    from compcars_kedro.data.dedup import crop_hash, hamming_matrix

    info = generate_sample(tmp_path / "dups", replace(TINY, near_duplicate_fraction=0.1))
    root = tmp_path / "dups"
    assert {tuple(d["transform"])[0] for d in info["near_duplicates"]} == {"jpeg_quality", "resize"}
    for d in info["near_duplicates"]:
        dup, src = d["path"], d["source"]
        assert dup != src and dup.split("/")[:3] == src.split("/")[:3]  # same make and model
        vp_d, _, box_d, _ = _read_label(_label_for(root, dup.removeprefix("image/")))
        vp_s, _, box_s, _ = _read_label(_label_for(root, src.removeprefix("image/")))
        assert vp_d == vp_s == d["viewpoint"]
        a, b = Image.open(root / dup), Image.open(root / src)
        kind, value = d["transform"]
        if kind == "resize":
            assert a.size == tuple(round(v * value) for v in b.size)
            assert abs(box_d[2] - box_s[2] * value) <= 1.5
        else:
            assert a.size == b.size and box_d == box_s
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).mean() < 6
        boxes = [(x1 - 1, y1 - 1, x2, y2) for x1, y1, x2, y2 in (box_d, box_s)]
        hashes = [crop_hash((str(root / p), bx, "phash", 16)) for p, bx in zip((dup, src), boxes, strict=True)]
        # of 256 bits; resized copies of these tiny 128x96 photos differ most (<= 20 at 320x240)
        assert hamming_matrix(hashes)[0, 1] <= (20 if kind == "jpeg_quality" else 28)


def test_make_model_name_mat(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    mat = scipy.io.loadmat(root / "misc" / "make_model_name.mat")
    makes, models = mat["make_names"], mat["model_names"]
    assert makes.shape == (163, 1) and models.shape == (2004, 1)

    def name(cell: np.ndarray) -> str | None:
        return None if cell.size == 0 else str(cell[0])

    used_makes = {m["make_id"]: m["name"] for m in info["makes"]}
    used_models = {m["model_id"]: m["model_name"] for m in info["models"]}
    for i in range(163):
        assert name(makes[i, 0]) == used_makes.get(i + 1)
    for i in range(2004):
        assert name(models[i, 0]) == used_models.get(i + 1)
    empty = [i for i in range(2004) if models[i, 0].size == 0]
    assert len(empty) == 2004 - len(used_models)
    assert models[empty[0], 0].shape == (0, 0)

    make_names = [name(makes[i - 1, 0]) for i in used_makes]
    assert len(set(make_names)) < len(make_names), "two make ids must share a name"
    assert any(n != n.rstrip() for n in make_names), "a make name with a trailing space"
    assert any(n != n.rstrip() for n in used_models.values()), "a model name with a trailing space"


def test_car_type_mat_and_attributes(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    types = scipy.io.loadmat(root / "misc" / "car_type.mat")["types"]
    assert types.shape == (1, 12)
    assert [str(types[0, i][0]) for i in range(12)] == list(CAR_TYPES)

    lines = (root / "misc" / "attributes.txt").read_text().splitlines()
    assert lines[0] == "model_id maximum_speed displacement door_number seat_number type"
    rows = {int(r.split()[0]): r.split() for r in lines[1:]}
    assert all(len(r) == 6 for r in rows.values())
    used = {m["model_id"] for m in info["models"]}
    assert used <= set(rows)
    assert all(0 <= int(r[5]) <= 12 for r in rows.values())
    assert any(int(rows[m][5]) == 0 for m in used), "at least one model of unknown type"
    assert any(v == "0" for r in rows.values() for v in r[1:5]), "some unknown (0) values"
    for r in rows.values():
        float(r[2])  # displacement parses


def test_train_test_split(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    split = root / "train_test_split" / "classification"
    train = split.joinpath("train.txt").read_text().splitlines()
    test = split.joinpath("test.txt").read_text().splitlines()
    assert not set(train) & set(test)
    listed = train + test
    pattern = re.compile(r"^\d+/\d+/(\d{4}|unknown)/[0-9a-f]{14}\.jpg$")
    assert all(pattern.match(p) for p in listed)
    missing = sorted(p for p in listed if not (root / "image" / p).exists())
    assert missing == sorted(p.removeprefix("image/") for p in info["split_missing"])
    assert len(missing) == 2
    on_disk = {p.relative_to(root / "image").as_posix() for p in (root / "image").rglob("*.jpg")}
    assert set(listed) - set(missing) == on_disk
    assert 0.5 <= len(train) / len(listed) <= 0.9


def test_planted_broken_inputs(tiny: tuple[Path, dict]) -> None:
    root, info = tiny
    planted = {p["expected_reason"]: p for p in info["planted"]}
    assert len(info["planted"]) == 7 and set(planted) == {*PLANTED_REASONS, None}
    assert planted[None]["note"] == "clipped"
    model_dirs = {f"image/{m['make_id']}/{m['model_id']}/" for m in info["models"]}
    for p in info["planted"]:
        assert (root / p["path"]).is_file()
        assert any(p["path"].startswith(d) for d in model_dirs)
    W, H = TINY.width, TINY.height

    def label(reason: str | None) -> tuple:
        return _read_label(_label_for(root, planted[reason]["path"].removeprefix("image/")))

    def load(reason: str | None) -> Image.Image:
        img = Image.open(root / planted[reason]["path"])
        img.load()
        return img

    # truncated JPEG: the header opens, decoding fails
    img = Image.open(root / planted["decode_error"]["path"])
    assert img.format == "JPEG" and img.size == (W, H)
    with pytest.raises(OSError):
        img.load()
    vp, _, (x1, y1, x2, y2), _ = label("decode_error")
    assert vp in (1, 2) and 1 <= x1 < x2 <= W and 1 <= y1 < y2 <= H

    assert load("missing_label").size == (W, H)
    assert not _label_for(root, planted["missing_label"]["path"].removeprefix("image/")).exists()

    assert load("bbox_outside_image").size == (W, H)
    vp, _, (x1, _, x2, _), _ = label("bbox_outside_image")
    assert vp in (1, 2) and x2 > W and (x2 - W) / (x2 - x1 + 1) > 0.3

    vp, _, (x1, y1, x2, y2), _ = label("degenerate_bbox")
    assert vp in (1, 2) and (x2 <= x1 or y2 <= y1)

    with pytest.raises(UnidentifiedImageError):
        Image.open(root / planted["not_an_image"]["path"])
    assert label("not_an_image")[0] in (1, 2)

    assert load("unknown_viewpoint").size == (W, H)
    assert label("unknown_viewpoint")[0] == 7

    assert load(None).size == (W, H)
    vp, _, (x1, y1, x2, y2), _ = label(None)
    assert vp in (1, 2) and 1 <= x1 < W < x2 and 1 <= y1 < y2 <= H
    assert (x2 - W) / (x2 - x1 + 1) <= 0.05


def test_existing_sample_is_kept_or_replaced(tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = generate_sample(out, MICRO)
    stamp = (out / "sample_info.json").stat().st_mtime_ns
    before = _hashes(out)
    assert generate_sample(out, MICRO) == first
    assert (out / "sample_info.json").stat().st_mtime_ns == stamp and _hashes(out) == before

    other = replace(MICRO, seed=5)
    with pytest.raises(FileExistsError):
        generate_sample(out, other)
    assert _hashes(out) == before
    info = generate_sample(out, other, overwrite=True)
    assert info["spec"]["seed"] == 5 and _hashes(out) != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial dir left"


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "real_compcars"
    (foreign / "image").mkdir(parents=True)
    (foreign / "image" / "keep.jpg").write_bytes(b"x")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError):
            generate_sample(foreign, MICRO, overwrite=overwrite)
    assert (foreign / "image" / "keep.jpg").read_bytes() == b"x"
    # an existing empty directory is fine
    (tmp_path / "empty").mkdir()
    assert generate_sample(tmp_path / "empty", MICRO)["counts"]["models"] == 3


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--tiny", "--images-per-view", "2", "--width", "64"]
    args += ["--height", "48", "--no-broken", "--seed", "4"]
    assert main(args) == 0
    info = json.loads((out / "sample_info.json").read_text())
    expected = replace(TINY, images_per_view=2, width=64, height=48, broken=False, seed=4)
    assert info["spec"] == asdict(expected) and info["planted"] == []
    stamp = (out / "sample_info.json").stat().st_mtime_ns
    assert main(args) == 0  # same spec: nothing to do
    assert (out / "sample_info.json").stat().st_mtime_ns == stamp
    assert main([*args[:-1], "5"]) == 2  # different spec without --overwrite
    assert main([*args[:-1], "5", "--overwrite"]) == 0
    assert json.loads((out / "sample_info.json").read_text())["spec"]["seed"] == 5


def test_invalid_spec() -> None:
    with pytest.raises(ValueError):
        SampleSpec(n_makes=0)
    with pytest.raises(ValueError):
        SampleSpec(width=10)


def test_colour_does_not_identify_the_model(medium: tuple[Path, dict]) -> None:
    root, info = medium
    colours, shapes, y, _ = _features(root, info, (1,))
    assert len(set(y)) == 24 and len(y) == 24 * MEDIUM.images_per_view
    colour_acc = _loo_1nn(colours, y)
    shape_acc = _loo_1nn(shapes, y)
    assert colour_acc < 0.35, colour_acc
    assert shape_acc - colour_acc > 0.3, (shape_acc, colour_acc)
    # the palette subsets overlap: every used colour is shared by several models
    users: dict[str, int] = {}
    for m in info["models"]:
        assert 3 <= len(m["colours"]) <= 4
        for c in m["colours"]:
            users[c] = users.get(c, 0) + 1
    assert min(users.values()) >= 2


def test_shape_is_learnable(medium: tuple[Path, dict]) -> None:
    root, info = medium
    _, shapes, y, vps = _features(root, info, (1, 2))
    front = vps == 1
    chance = 1 / 24
    assert _loo_1nn(shapes[front], y[front]) > 10 * chance
    assert _loo_1nn(shapes[~front], y[~front]) > 10 * chance
    # front and rear of the same model look clearly different
    assert _loo_1nn(shapes, vps) > 0.9
