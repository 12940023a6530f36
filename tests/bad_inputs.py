"""Builders of small raw collections full of bad inputs (made by the tests, nothing checked in).

Each builder writes good images of three classes (front and rear views) plus the planted bad
inputs of the chosen ``cases`` and returns ``(source path, {planted path: expected reason})``.
A planted path with reason ``None`` must be *kept* (e.g. an EXIF-rotated photo whose box is given
in displayed pixels).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("alpha", "beta", "gamma")
VIEWS = ("front", "rear")
N_PER_VIEW = 3
SIZE = (48, 36)

MANIFEST_CASES = {
    "duplicate_path": "duplicate_path",
    "duplicate_spelling": "duplicate_path",
    "blank_label": "missing_label",
    "empty_label": "missing_label",
    "box_120px": "label_error",
    "box_inf": "label_error",
    "parent_path": "path_outside_root",
    "absolute_path": "path_outside_root",
    "etc_hostname": "path_outside_root",
    "symlink_out": "path_outside_root",
    "exif_6": None,
    "too_large": "too_large",
    "bomb": "decompression_bomb",
}
COMPCARS_CASES = {
    "label_0xff": "label_error",
    "label_bom": None,
    "box_count_2_one_line": "label_error",
    "box_count_1_two_lines": "label_error",
    "symlink_file_out": "path_outside_root",
    "symlink_dir_out": "path_outside_root",
}


def _jpeg(path: Path, color: tuple[int, int, int], seed: int, size: tuple[int, int] = SIZE) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (no pixel data: any decode fails)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def exif_rotated_jpeg(path: Path) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """An orientation-6 JPEG: displayed 40 x 60 (portrait) with a red box, stored 60 x 40.

    Returns the displayed image and the red box in displayed pixels (0-based, half-open).
    """
    shown = np.zeros((60, 40, 3), dtype=np.uint8)
    shown[:, :] = (0, 0, 200)
    box = (5, 30, 35, 58)
    shown[box[1]:box[3], box[0]:box[2]] = (220, 0, 0)
    displayed = Image.fromarray(shown)
    stored = displayed.transpose(Image.Transpose.ROTATE_90)  # exif_transpose undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, quality=95, exif=exif)
    return displayed, box


def _good_images(folder: Path) -> list[tuple[str, str, str]]:
    """(relative path, label, view) of the good images under ``folder/images``."""
    rows = []
    for ci, label in enumerate(CLASSES):
        for vi, view in enumerate(VIEWS):
            for k in range(N_PER_VIEW):
                rel = f"images/{label}_{view}_{k}.jpg"
                _jpeg(folder / rel, (60 * ci + 40, 80 * vi + 40, 120), seed=ci * 100 + vi * 10 + k)
                rows.append((rel, label, view))
    return rows


def make_bad_manifest(tmp: Path, cases: list[str] | None = None) -> tuple[Path, dict[str, str | None]]:
    """``tmp/collection/manifest.csv`` (+ images) with the chosen planted cases (default: all)."""
    cases = list(MANIFEST_CASES) if cases is None else cases
    folder = tmp / "collection"
    good = _good_images(folder)
    lines = ["image_path,label,viewpoint,x0,y0,x1,y1"]
    lines += [f"{rel},{label},{view},,,," for rel, label, view in good]
    planted: dict[str, str | None] = {}
    outside = tmp / "outside"
    outside.mkdir(exist_ok=True)
    _jpeg(outside / "secret.jpg", (1, 2, 3), seed=7)

    def add(rel: str, label: str = "alpha", view: str = "front", box: str = ",,,") -> None:
        lines.append(f"{rel},{label},{view},{box}")
        planted[rel] = MANIFEST_CASES[case]

    for case in cases:
        if case == "duplicate_path":
            add(good[0][0], label="beta")  # same file again, other label: first row wins
        elif case == "duplicate_spelling":
            add("images/./" + good[1][0].split("/")[-1])
        elif case in ("blank_label", "empty_label", "box_120px", "box_inf"):
            rel = f"images/{case}.jpg"
            _jpeg(folder / rel, (90, 90, 90), seed=len(lines))
            label = {"blank_label": "   ", "empty_label": ""}.get(case, "alpha")
            box = {"box_120px": "120px,2,40,30", "box_inf": "1,2,inf,30"}.get(case, ",,,")
            add(rel, label=label, box=box)
        elif case == "parent_path":
            add("../outside/secret.jpg")
        elif case == "absolute_path":
            add(str(outside / "secret.jpg"))
        elif case == "etc_hostname":
            add("../../../../../../../../etc/hostname")
        elif case == "symlink_out":
            os.symlink(outside / "secret.jpg", folder / "images" / "link.jpg")
            add("images/link.jpg")
        elif case == "exif_6":
            _, box = exif_rotated_jpeg(folder / "images" / "rotated.jpg")
            add("images/rotated.jpg", box=",".join(map(str, box)))
        elif case == "too_large":
            png_header_only(folder / "images" / "huge.png", 10_000, 6_000)  # 60 MP
            add("images/huge.png")
        elif case == "bomb":
            png_header_only(folder / "images" / "bomb.png", 20_000, 20_000)  # 400 MP
            add("images/bomb.png")
        else:
            raise KeyError(case)
    csv = folder / "manifest.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv, planted


def _savemat(path: Path, data: dict) -> None:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, data, format="5")
    path.write_bytes(buf.getvalue())


def _cells(names: list[str]) -> np.ndarray:
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = n
    return arr


def make_bad_compcars(tmp: Path, cases: list[str] | None = None) -> tuple[Path, dict[str, str | None]]:
    """A CompCars-layout tree ``tmp/compcars`` with the chosen planted cases (default: all)."""
    cases = list(COMPCARS_CASES) if cases is None else cases
    root = tmp / "compcars"
    (root / "misc").mkdir(parents=True)
    _savemat(root / "misc" / "make_model_name.mat",
             {"make_names": _cells(["MakeA", "MakeB"]),
              "model_names": _cells([f"Model{c}" for c in CLASSES])})

    def image(model_id: int, name: str, view: int, seed: int, label: bytes | None = None) -> str:
        rel = f"{1 if model_id < 3 else 2}/{model_id}/2015/{name}"
        _jpeg(root / "image" / f"{rel}.jpg", (50 * model_id, 30 * view, 90), seed=seed)
        lf = root / "label" / f"{rel}.txt"
        lf.parent.mkdir(parents=True, exist_ok=True)
        lf.write_bytes(label if label is not None else f"{view}\n1\n3 3 44 33\n".encode())
        return f"image/{rel}.jpg"

    seed = 0
    for model_id in (1, 2, 3):
        for view in (1, 2):
            for k in range(N_PER_VIEW):
                seed += 1
                image(model_id, f"m{model_id}v{view}k{k}", view, seed)
    planted: dict[str, str | None] = {}
    outside = tmp / "outside_tree"
    outside.mkdir(exist_ok=True)
    _jpeg(outside / "x.jpg", (1, 2, 3), seed=99)
    labels = {
        "label_0xff": b"1\n1\n3 3 44 33\xff\n",
        "label_bom": b"\xef\xbb\xbf1\n1\n3 3 44 33\n",
        "box_count_2_one_line": b"1\n2\n3 3 44 33\n",
        "box_count_1_two_lines": b"1\n1\n3 3 44 33\n5 5 40 30\n",
    }
    for case in cases:
        if case in labels:
            planted[image(1, case, 1, seed=500 + len(planted), label=labels[case])] = \
                COMPCARS_CASES[case]
        elif case == "symlink_file_out":
            link = root / "image/1/1/2015/linked.jpg"
            os.symlink(outside / "x.jpg", link)
            (root / "label/1/1/2015/linked.txt").write_text("1\n1\n3 3 44 33\n")
            planted["image/1/1/2015/linked.jpg"] = COMPCARS_CASES[case]
        elif case == "symlink_dir_out":
            os.symlink(outside, root / "image/1/1/2016")
            (root / "label/1/1/2016").mkdir(parents=True)
            (root / "label/1/1/2016/x.txt").write_text("1\n1\n3 3 44 33\n")
            planted["image/1/1/2016"] = COMPCARS_CASES[case]
        else:
            raise KeyError(case)
    return root, planted
