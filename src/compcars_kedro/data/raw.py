"""Parse a raw image collection into a manifest table.

Two inputs are supported:

* the CompCars web-nature layout (``image/<make>/<model>/<year>/<name>.jpg`` + ``label/…txt`` +
  ``misc/*.mat`` + ``train_test_split/classification``), see ``docs`` in the README;
* a generic manifest CSV with columns ``image_path, label`` and optional ``x0 y0 x1 y1``
  (0-based, half-open pixels), ``viewpoint`` and ``make``.

Bounding boxes in the manifest are always **0-based, half-open** pixel coordinates of the image
*as displayed*, i.e. after its EXIF orientation is applied (``width``/``height`` are displayed
sizes too, and ``exif_rotated`` says whether the stored pixels are rotated/flipped).
CompCars labels are 1-based inclusive, so ``(x1, y1, x2, y2)`` becomes ``(x1-1, y1-1, x2, y2)``.

Per-file problems never abort parsing: they are recorded in ``input_reason`` / ``input_detail``
(or ``label_error``) and become rows of ``rejected_images`` in ``validate_images``. Paths (CSV
rows, symlinks under ``image/``) that resolve outside the collection's folder are never opened.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from compcars_kedro.data.imaging import displayed_size
from compcars_kedro.names import (
    DECOMPRESSION_BOMB,
    DUPLICATE_PATH,
    MISSING_FILE,
    MISSING_LABEL,
    PATH_OUTSIDE_ROOT,
)

logger = logging.getLogger(__name__)

VIEWPOINTS: dict[int, str] = {
    -1: "uncertain",
    1: "front",
    2: "rear",
    3: "side",
    4: "front-side",
    5: "rear-side",
}
VIEWPOINT_NAMES = set(VIEWPOINTS.values())

MANIFEST_COLUMNS = [
    "image_id", "path", "exists", "has_label", "make_id", "model_id", "year",
    "viewpoint_code", "viewpoint", "x0", "y0", "x1", "y1", "width", "height",
    "make", "model", "type", "official_split", "label_error", "exif_rotated", "input_reason",
    "input_detail",
]
BOX_COLUMNS = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class RawSource:
    """Handle on a raw collection: a CompCars root folder or a manifest CSV file."""

    root: Path
    kind: str  # "compcars" | "manifest_csv"

    @property
    def base_dir(self) -> Path:
        """Folder that manifest ``path`` values are relative to."""
        return self.root if self.kind == "compcars" else self.root.parent

    def resolve(self, rel_path: str) -> Path:
        return self.base_dir / rel_path


def detect_source(path: str | Path) -> RawSource:
    """Recognise a CompCars root (``image/`` + ``label/``) or a ``.csv`` manifest."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return RawSource(p, "manifest_csv")
    if (p / "image").is_dir() and (p / "label").is_dir():
        return RawSource(p, "compcars")
    raise FileNotFoundError(
        f"{p} is neither a CompCars root (with image/ and label/) nor a manifest .csv; "
        "set `raw_path` in conf/local/globals.yml, or the COMPCARS_ROOT variable, or "
        "`--params raw_path=...` (any env; `make sample` generates the default sample)"
    )


# --------------------------------------------------------------------------- CompCars labels
@dataclass(frozen=True)
class Label:
    viewpoint_code: int | None
    bbox_1based: tuple[int, int, int, int] | None
    error: str | None = None


def parse_label_text(text: str) -> Label:
    """Parse a CompCars label file (viewpoint, box count, ``x1 y1 x2 y2``), tolerating CRLF.

    The box count (line 2) must equal the number of box lines and be 1 (one car per image).
    """
    lines = [ln.strip() for ln in text.replace("\r", "").split("\n") if ln.strip()]
    if len(lines) < 3:
        return Label(None, None, f"expected 3 lines, got {len(lines)}")
    try:
        code = int(lines[0])
        count = int(lines[1])
        coords = tuple(int(round(float(v))) for v in lines[2].split())
    except (ValueError, OverflowError) as exc:
        return Label(None, None, f"unparsable label: {exc}")
    if count != len(lines) - 2:
        return Label(code, None, f"box count {count} but {len(lines) - 2} box line(s)")
    if count != 1:
        return Label(code, None, f"{count} boxes; one box per image is supported")
    if len(coords) != 4:
        return Label(code, None, f"expected 4 bbox values, got {len(coords)}")
    return Label(code, coords)  # type: ignore[arg-type]


def bbox_1based_to_0based(bbox: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """CompCars ``x1 y1 x2 y2`` (1-based inclusive) -> 0-based half-open ``(x0, y0, x1, y1)``."""
    x1, y1, x2, y2 = bbox
    return x1 - 1, y1 - 1, x2, y2


# --------------------------------------------------------------------------- .mat metadata
def _cell_str(cell: object) -> str | None:
    arr = np.asarray(cell)
    if arr.size == 0:
        return None
    value = arr.ravel()[0]
    return str(value).strip()


def read_make_model_names(mat_path: Path) -> tuple[dict[int, str], dict[int, str]]:
    """``make_names`` / ``model_names`` cells indexed by id-1; empty cells and spaces dropped."""
    from scipy.io import loadmat

    mat = loadmat(mat_path)
    makes = {i + 1: s for i, c in enumerate(mat["make_names"].ravel()) if (s := _cell_str(c))}
    models = {i + 1: s for i, c in enumerate(mat["model_names"].ravel()) if (s := _cell_str(c))}
    return makes, models


def read_car_types(mat_path: Path) -> dict[int, str]:
    from scipy.io import loadmat

    types = loadmat(mat_path)["types"].ravel()
    return {i + 1: s for i, c in enumerate(types) if (s := _cell_str(c))}


def read_attributes(path: Path) -> pd.DataFrame:
    """``misc/attributes.txt`` as a table indexed by model_id (``0`` means unknown)."""
    df = pd.read_csv(path, sep=r"\s+", engine="python")
    df.columns = [c.strip() for c in df.columns]
    return df.set_index("model_id")


def _image_id(rel_path: str) -> str:
    """Stable id: the CompCars file stem is unique per image; keep a hash suffix for safety."""
    digest = hashlib.sha1(rel_path.encode()).hexdigest()[:6]
    return f"{Path(rel_path).stem}-{digest}"


@dataclass(frozen=True)
class ImageHeader:
    """Displayed size from the file header (no pixel is decoded)."""

    width: float = float("nan")
    height: float = float("nan")
    exif_rotated: bool = False
    error: tuple[str, str] | None = None  # (reject reason, detail)


def read_header(path: Path) -> ImageHeader:
    """Header-only read: displayed size (EXIF orientation applied); NaN when not an image.

    A file Pillow refuses as a decompression bomb is reported as ``decompression_bomb``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides
            with Image.open(path) as img:
                (w, h), rotated = displayed_size(img)
    except Image.DecompressionBombError as exc:
        return ImageHeader(error=(DECOMPRESSION_BOMB, str(exc)[:200]))
    except Exception:  # noqa: BLE001 - any unreadable header is recorded downstream
        return ImageHeader()
    return ImageHeader(float(w), float(h), rotated)


def _inside(path: Path, real_root: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``real_root`` (already resolved)."""
    return path.resolve().is_relative_to(real_root)


def _walk_images(image_root: Path, real_root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(files, broken symlinks, symlinks leaving the root) under ``image_root``; links not followed."""
    files, broken, outside = [], [], []
    for dirpath, dirnames, filenames in os.walk(image_root):  # followlinks=False
        for name in dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():
                if _inside(p, real_root):
                    logger.warning("not following symlinked folder %s (inside the root)", p)
                else:
                    outside.append(p)
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink() and not _inside(p, real_root):
                outside.append(p)
            elif p.is_file():
                files.append(p)
            else:
                broken.append(p)
    return sorted(files), sorted(broken), sorted(outside)


def parse_compcars(root: Path) -> pd.DataFrame:
    """List every file under ``image/`` with its label and names; add listed-but-missing files."""
    image_root, label_root, misc = root / "image", root / "label", root / "misc"
    makes, models = read_make_model_names(misc / "make_model_name.mat")
    car_types = read_car_types(misc / "car_type.mat") if (misc / "car_type.mat").exists() else {}
    attributes = (
        read_attributes(misc / "attributes.txt") if (misc / "attributes.txt").exists() else None
    )

    official: dict[str, str] = {}
    split_dir = root / "train_test_split" / "classification"
    for split in ("train", "test"):
        f = split_dir / f"{split}.txt"
        if f.exists():
            for line in f.read_text(encoding="utf-8-sig", errors="replace").splitlines():
                if line.strip():
                    official[line.strip()] = split

    rows: list[dict] = []
    seen: set[str] = set()
    real_root = root.resolve()
    files, broken, outside = _walk_images(image_root, real_root)
    for f in files:
        rel_img = f.relative_to(image_root).as_posix()
        seen.add(rel_img)
        rows.append(_compcars_row(root, rel_img, exists=True, label_root=label_root))
    for f, reason, detail in [(f, MISSING_FILE, "broken symlink") for f in broken] + [
            (f, PATH_OUTSIDE_ROOT, f"symlink to {f.resolve()} leaves {real_root}; not followed")
            for f in outside]:
        rel_img = f.relative_to(image_root).as_posix()
        seen.add(rel_img)
        rows.append({**_compcars_row(root, rel_img, exists=False, label_root=None),
                     "exists": True, "input_reason": reason, "input_detail": detail})
    for rel_img in sorted(set(official) - seen):
        rows.append(_compcars_row(root, rel_img, exists=False, label_root=label_root))

    df = pd.DataFrame(rows)
    df["make"] = df["make_id"].map(makes)
    df["model"] = df["model_id"].map(models)
    if attributes is not None and "type" in attributes:
        type_ids = df["model_id"].map(attributes["type"])
        df["type"] = type_ids.map(car_types).fillna("unknown")
    else:
        df["type"] = "unknown"
    df["official_split"] = df["rel_image"].map(official)
    return _finish(df)


def _read_label(root: Path, label_file: Path) -> Label | None:
    """Parse one label file (``utf-8-sig``); every error is returned with the file's path."""
    rel = label_file.relative_to(root).as_posix() if label_file.is_relative_to(root) else label_file
    if not label_file.exists() and not label_file.is_symlink():
        return None
    try:
        if not _inside(label_file, root.resolve()):
            return Label(None, None, f"{rel}: symlink leaves the root, not followed")
        label = parse_label_text(label_file.read_text(encoding="utf-8-sig"))
    except Exception as exc:  # noqa: BLE001 - recorded per file, never aborts the run
        return Label(None, None, f"{rel}: {type(exc).__name__}: {exc}"[:300])
    return Label(label.viewpoint_code, label.bbox_1based,
                 f"{rel}: {label.error}" if label.error else None)


def _compcars_row(root: Path, rel_img: str, *, exists: bool, label_root: Path | None) -> dict:
    parts = rel_img.split("/")
    make_id = int(parts[0]) if len(parts) == 4 and parts[0].isdigit() else None
    model_id = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
    year = parts[2] if len(parts) == 4 else None
    label = None
    if label_root is not None:
        label = _read_label(root, label_root / (str(Path(rel_img).with_suffix("")) + ".txt"))
    header = read_header(root / "image" / rel_img) if exists else ImageHeader()
    bbox = bbox_1based_to_0based(label.bbox_1based) if label and label.bbox_1based else None
    return {
        "image_id": _image_id(rel_img),
        "rel_image": rel_img,
        "path": f"image/{rel_img}",
        "exists": exists,
        "has_label": label is not None,
        "make_id": make_id,
        "model_id": model_id,
        "year": year,
        "viewpoint_code": label.viewpoint_code if label else None,
        "x0": bbox[0] if bbox else np.nan,
        "y0": bbox[1] if bbox else np.nan,
        "x1": bbox[2] if bbox else np.nan,
        "y1": bbox[3] if bbox else np.nan,
        "width": header.width,
        "height": header.height,
        "label_error": label.error if label else None,
        "exif_rotated": header.exif_rotated,
        "input_reason": header.error[0] if header.error else None,
        "input_detail": header.error[1] if header.error else None,
    }


MANIFEST_CSV_FORMAT = "image_path,label[,x0,y0,x1,y1][,viewpoint][,make][,year]"


def parse_manifest_csv(csv_path: Path, *, allow_absolute_paths: bool = False) -> pd.DataFrame:
    """Generic input: ``image_path,label[,x0,y0,x1,y1][,viewpoint][,make]`` (paths relative to the CSV).

    Per-row problems become rejected rows (first matching reason): a path that resolves
    (symlinks included) outside the CSV's folder -> ``path_outside_root`` (absolute paths are
    accepted only with ``allow_absolute_paths``); the same file listed again -> ``duplicate_path``
    (the first row is kept); an empty or blank label -> ``missing_label``; a box cell that is not a
    finite number, or a partly empty box -> ``label_error`` naming the column. Empty box cells
    mean the whole image. A CSV without rows or without any label is an error.
    """
    try:
        src = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"manifest CSV {csv_path} is empty; expected a header "
                         f"{MANIFEST_CSV_FORMAT!r} and one row per image") from None
    src.columns = [str(c).strip() for c in src.columns]
    missing = {"image_path", "label"} - set(src.columns)
    if missing:
        raise ValueError(f"manifest CSV {csv_path} lacks required column(s) {sorted(missing)}")
    if src.empty:
        raise ValueError(f"manifest CSV {csv_path} has a header but no rows; expected one row per "
                         f"image ({MANIFEST_CSV_FORMAT})")
    box_cols = [k for k in BOX_COLUMNS if k in src.columns]
    if box_cols and len(box_cols) != 4:
        raise ValueError(f"manifest CSV {csv_path} has box column(s) {box_cols} but not all of "
                         f"{list(BOX_COLUMNS)}")
    src = src.apply(lambda col: col.str.strip())
    labels = sorted(set(src["label"]) - {""})
    if not labels:
        raise ValueError(f"manifest CSV {csv_path}: every label is empty")
    label_ids = {name: i + 1 for i, name in enumerate(labels)}
    base, real_base = csv_path.parent, csv_path.parent.resolve()
    first_line: dict[Path, int] = {}
    rows = []
    for n, rec in enumerate(src.to_dict("records")):
        line = n + 2  # line number in the CSV (the header is line 1)
        rel, label = rec["image_path"], rec["label"]
        reason, detail = _manifest_path_problem(rel, base, real_base, allow_absolute_paths,
                                                first_line, line)
        exists = reason is None and (base / rel).is_file()
        if reason is None and not exists:
            reason, detail = MISSING_FILE, f"line {line}: {rel} not found"
        header = read_header(base / rel) if exists else ImageHeader()
        if reason is None and header.error:
            reason, detail = header.error
        if reason is None and not label:
            reason, detail = MISSING_LABEL, f"line {line}: empty or blank label"
        bbox, box_error = _manifest_box(rec, box_cols, header.width, header.height)
        view = rec.get("viewpoint", "front") if "viewpoint" in src else "front"
        rows.append({
            "image_id": _image_id(rel if reason != DUPLICATE_PATH else f"{rel}#line{line}"),
            "rel_image": rel,
            "path": rel,
            "exists": exists,
            "has_label": bool(label),
            "make_id": None,
            "model_id": label_ids.get(label),
            "year": rec.get("year") or "unknown",
            "viewpoint_code": next((c for c, n in VIEWPOINTS.items() if n == view), 99),
            "x0": bbox[0], "y0": bbox[1], "x1": bbox[2], "y1": bbox[3],
            "width": header.width,
            "height": header.height,
            "make": rec.get("make") or "unknown",
            "model": label or None,
            "type": "unknown",
            "official_split": None,
            "label_error": f"line {line}: {box_error}" if box_error else None,
            "exif_rotated": header.exif_rotated,
            "input_reason": reason,
            "input_detail": detail,
        })
    return _finish(pd.DataFrame(rows))


def _manifest_path_problem(rel: str, base: Path, real_base: Path, allow_absolute: bool,
                           first_line: dict[Path, int], line: int) -> tuple[str | None, str | None]:
    """``(reason, detail)`` when a CSV path is empty, leaves the CSV's folder or repeats a file."""
    if not rel:
        return MISSING_FILE, f"line {line}: empty image_path"
    path = Path(rel)
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(real_base) and not (path.is_absolute() and allow_absolute):
        hint = (" (absolute paths need data_engineering.allow_absolute_paths: true)"
                if path.is_absolute() else "")
        return (PATH_OUTSIDE_ROOT,
                f"line {line}: {rel} resolves to {resolved}, outside {real_base}{hint}")
    if resolved in first_line:
        return DUPLICATE_PATH, f"line {line}: same file as line {first_line[resolved]} (kept)"
    first_line[resolved] = line
    return None, None


def _manifest_box(rec: dict[str, str], box_cols: list[str], width: float,
                  height: float) -> tuple[tuple[float, ...], str | None]:
    """Box of a CSV row (empty cells: the whole image) and the error naming a bad column."""
    cells = {k: rec[k] for k in box_cols}
    if not any(cells.values()):
        return (0.0, 0.0, width, height), None
    values, problems = [], []
    for key, cell in cells.items():
        try:
            value = float(cell)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            problems.append(f"{key}={cell!r}" + (" is empty" if not cell else " is not a finite number"))
        values.append(value)
    if problems:
        return (np.nan,) * 4, "box column " + ", ".join(problems)
    return tuple(values), None


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    df["viewpoint"] = df["viewpoint_code"].map(
        lambda c: VIEWPOINTS.get(int(c), "unknown") if pd.notna(c) else None
    )
    for col in ("make_id", "model_id", "viewpoint_code"):
        df[col] = pd.array(df[col], dtype="Int64")
    for col in ("x0", "y0", "x1", "y1", "width", "height"):
        df[col] = df[col].astype("float64")
    for col in ("make", "model", "type"):
        df[col] = df[col].astype("string").str.strip()
    df["year"] = df["year"].astype("string")
    for col in ("input_reason", "input_detail", "label_error"):
        df[col] = df[col].astype("string") if col in df else pd.Series(pd.NA, df.index, "string")
    df["exif_rotated"] = df["exif_rotated"].fillna(False).astype(bool) if "exif_rotated" in df \
        else False
    return df[MANIFEST_COLUMNS].sort_values("path", kind="stable").reset_index(drop=True)
