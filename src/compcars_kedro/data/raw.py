"""Parse a raw image collection into a manifest table.

Two inputs are supported:

* the CompCars web-nature layout (``image/<make>/<model>/<year>/<name>.jpg`` + ``label/…txt`` +
  ``misc/*.mat`` + ``train_test_split/classification``), see ``docs`` in the README;
* a generic manifest CSV with columns ``image_path, label`` and optional ``x0 y0 x1 y1``
  (0-based, half-open pixels), ``viewpoint`` and ``make``.

Bounding boxes in the manifest are always **0-based, half-open** pixel coordinates.
CompCars labels are 1-based inclusive, so ``(x1, y1, x2, y2)`` becomes ``(x1-1, y1-1, x2, y2)``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

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
    "make", "model", "type", "official_split", "label_error",
]


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
    """Parse a CompCars label file (viewpoint, box count, ``x1 y1 x2 y2``), tolerating CRLF."""
    lines = [ln.strip() for ln in text.replace("\r", "").split("\n") if ln.strip()]
    if len(lines) < 3:
        return Label(None, None, f"expected 3 lines, got {len(lines)}")
    try:
        code = int(lines[0])
        coords = tuple(int(round(float(v))) for v in lines[2].split())
    except ValueError as exc:
        return Label(None, None, f"unparsable label: {exc}")
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


def _image_size(path: Path) -> tuple[float, float]:
    """Header-only read (no decoding); NaN when the file is not an image."""
    try:
        with Image.open(path) as img:
            return float(img.width), float(img.height)
    except Exception:  # noqa: BLE001 - any unreadable header is recorded downstream
        return float("nan"), float("nan")


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
            for line in f.read_text().splitlines():
                if line.strip():
                    official[line.strip()] = split

    rows: list[dict] = []
    seen: set[str] = set()
    for f in sorted(p for p in image_root.rglob("*") if p.is_file()):
        rel_img = f.relative_to(image_root).as_posix()
        seen.add(rel_img)
        rows.append(_compcars_row(root, rel_img, exists=True, label_root=label_root))
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


def _compcars_row(root: Path, rel_img: str, *, exists: bool, label_root: Path) -> dict:
    parts = rel_img.split("/")
    make_id = int(parts[0]) if len(parts) == 4 and parts[0].isdigit() else None
    model_id = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
    year = parts[2] if len(parts) == 4 else None
    label_file = label_root / (str(Path(rel_img).with_suffix("")) + ".txt")
    label = parse_label_text(label_file.read_text()) if label_file.exists() else None
    width, height = _image_size(root / "image" / rel_img) if exists else (np.nan, np.nan)
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
        "width": width,
        "height": height,
        "label_error": label.error if label else None,
    }


def parse_manifest_csv(csv_path: Path) -> pd.DataFrame:
    """Generic input: ``image_path,label[,x0,y0,x1,y1][,viewpoint][,make]`` (paths relative to the CSV)."""
    src = pd.read_csv(csv_path)
    missing = {"image_path", "label"} - set(src.columns)
    if missing:
        raise ValueError(f"manifest CSV {csv_path} lacks required column(s) {sorted(missing)}")
    base = csv_path.parent
    has_bbox = {"x0", "y0", "x1", "y1"} <= set(src.columns)
    rows = []
    labels = sorted(src["label"].astype(str).str.strip().unique())
    label_ids = {name: i + 1 for i, name in enumerate(labels)}
    for rec in src.to_dict("records"):
        rel = str(rec["image_path"]).strip()
        exists = (base / rel).is_file()
        width, height = _image_size(base / rel) if exists else (np.nan, np.nan)
        view = str(rec.get("viewpoint", "front")).strip() if "viewpoint" in src else "front"
        code = next((c for c, n in VIEWPOINTS.items() if n == view), 99)
        label = str(rec["label"]).strip()
        bbox = (
            tuple(rec[k] for k in ("x0", "y0", "x1", "y1"))
            if has_bbox and not any(pd.isna(rec[k]) for k in ("x0", "y0", "x1", "y1"))
            else (0, 0, width, height)
        )
        rows.append({
            "image_id": _image_id(rel),
            "rel_image": rel,
            "path": rel,
            "exists": exists,
            "has_label": True,
            "make_id": None,
            "model_id": label_ids[label],
            "year": str(rec.get("year", "unknown")) if "year" in src else "unknown",
            "viewpoint_code": code,
            "x0": bbox[0], "y0": bbox[1], "x1": bbox[2], "y1": bbox[3],
            "width": width,
            "height": height,
            "make": str(rec.get("make", "unknown")).strip() if "make" in src else "unknown",
            "model": label,
            "type": "unknown",
            "official_split": None,
            "label_error": None,
        })
    return _finish(pd.DataFrame(rows))


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
    return df[MANIFEST_COLUMNS].sort_values("path", kind="stable").reset_index(drop=True)
