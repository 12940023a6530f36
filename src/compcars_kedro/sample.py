"""Deterministic generator of a small sample dataset in the CompCars on-disk layout.

The real CompCars data cannot be redistributed, so tests, docs and demo runs use this
generator instead. It writes procedurally drawn cars (make-level family traits plus
model-level proportions; body colour deliberately uninformative) into the same folder
layout, with the same file formats and quirks as ``data/`` of CompCars:

* ``image/<make>/<model>/<year>/<14 hex>.jpg`` and ``label/<same>.txt`` (viewpoint, ``1``,
  1-based inclusive ``x1 y1 x2 y2``; some files with CRLF after line 1),
* ``misc/make_model_name.mat``, ``misc/attributes.txt``, ``misc/car_type.mat``,
* ``train_test_split/classification/{train,test}.txt``,

plus ``sample_info.json`` (not part of CompCars) describing the spec, counts and the
deliberately planted broken inputs.

Run ``python -m compcars_kedro.sample --out data/01_raw/compcars_sample``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from compcars_kedro.data.raw import VIEWPOINTS

logger = logging.getLogger("compcars_kedro.sample")

GENERATOR_VERSION = 2
MAX_MAKE_ID = 163  # id space of the real make_names cell (163x1)
MAX_MODEL_ID = 2004  # id space of the real model_names cell (2004x1)
SUPERSAMPLE = 2  # cars are drawn at 2x and downsampled (anti-aliasing)

EXTRA_VIEWPOINTS = (3, 4, 5, -1)
EXTRA_VIEWPOINT_P = (0.3, 0.32, 0.3, 0.08)

CAR_TYPES = (
    "MPV",
    "SUV",
    "sedan",
    "hatchback",
    "minibus",
    "fastback",
    "estate",
    "pickup",
    "hardtop convertible",
    "sports",
    "crossover",
    "convertible",
)

# Reasons a downstream validator is expected to give for the planted inputs.
REASON_DECODE_ERROR = "decode_error"
REASON_MISSING_LABEL = "missing_label"
REASON_BBOX_OUTSIDE = "bbox_outside_image"
REASON_DEGENERATE_BBOX = "degenerate_bbox"
REASON_NOT_AN_IMAGE = "not_an_image"
REASON_UNKNOWN_VIEWPOINT = "unknown_viewpoint"
PLANTED_REASONS = (
    REASON_DECODE_ERROR,
    REASON_MISSING_LABEL,
    REASON_BBOX_OUTSIDE,
    REASON_DEGENERATE_BBOX,
    REASON_NOT_AN_IMAGE,
    REASON_UNKNOWN_VIEWPOINT,
)

# Shared body-colour palette: every model uses an overlapping random subset of it.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (232, 232, 228),
    "silver": (168, 172, 178),
    "black": (30, 30, 34),
    "red": (172, 32, 30),
    "blue": (38, 66, 150),
    "green": (42, 102, 62),
    "yellow": (214, 176, 42),
    "grey": (102, 102, 108),
    "brown": (112, 72, 46),
    "orange": (208, 112, 32),
}
PALETTE_NAMES = tuple(PALETTE)

GRILLE_STYLES = (
    "horizontal_bars",
    "mesh",
    "vertical_bars",
    "twin_kidney",
    "single_slot",
    "hexagon",
)
HEADLIGHT_SHAPES = ("round", "rectangle", "slit", "trapezoid", "twin_round")
TAILLIGHT_STYLES = ("bar_across", "vertical_strips", "round_pairs", "l_shapes")
BADGE_SHAPES = ("circle", "diamond", "oval", "shield", "ring")
WINDOW_STYLES = ("plain", "curved", "sunstrip")
EXHAUST_LAYOUTS = ("none", "single", "dual", "twin_left", "quad")

MAKE_NAME_POOL = (
    "Audi",
    "BMW",
    "Benz",
    "Volvo",
    "Toyota",
    "Honda",
    "Nissan",
    "Mazda",
    "Kia",
    "Ford",
    "Peugeot",
    "Citroen",
    "Skoda",
    "Subaru",
    "Suzuki",
    "Jeep",
    "Buick",
    "Chery",
    "Geely",
    "BYD",
    "Porsche",
    "Jaguar",
    "Fiat",
    "Opel",
    "Dacia",
    "Lancia",
    "SAAB",
    "Saab",
    "Mitsubishi",
    "Alfa Romeo",
)
DUPLICATE_MAKE_NAME = "Lotus"
TRAILING_SPACE_MAKE_NAME = "Hyundai "
MODEL_NAME_STEMS = (
    "Astra",
    "Civic",
    "Corsa",
    "Focus",
    "Golf",
    "Jazz",
    "Kona",
    "Leon",
    "Polo",
    "Swift",
    "Tiguan",
    "Yaris",
    "Accord",
    "Sylphy",
    "Elise",
    "Evora",
    "Tucson",
    "Sonata",
    "Cerato",
    "Octavia",
    "Fabia",
    "Legacy",
    "Outback",
    "Wrangler",
    "Regal",
    "Tiggo",
    "Emgrand",
    "Cayenne",
    "Panda",
    "Punto",
    "Insignia",
    "Duster",
    "Lancer",
    "Giulia",
    "Forester",
)
MODEL_SUFFIXES = ("", " L", " GT", " Sport", " 2.0T", " Hybrid", " Coupe", " SW", " EV")

TYRE = (22, 22, 24, 255)
GLASS = (44, 54, 66)
DARK = (26, 26, 30, 255)
CHROME = (196, 198, 204, 255)
HEADLIGHT = (232, 234, 228, 255)
HEADLIGHT_RIM = (72, 74, 80, 255)
TAIL_RED = (184, 26, 28, 255)
TAIL_INNER = (232, 92, 80, 255)
PLATE = (236, 236, 230, 255)
PLATE_TEXT = (40, 40, 44, 255)
NOT_AN_IMAGE_BYTES = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p>\n"
    b"<hr><address>Apache Server</address></body></html>\n"
)


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. Same spec -> byte-identical output."""

    n_makes: int = 6
    models_per_make: int = 4
    # Front / rear counts per model. ``images_per_view`` set: exactly that many of each (equal
    # views). None: drawn per model like the real data, the larger view between
    # ``min_per_view`` and ``max_per_view`` and a front:rear ratio from 1 to ``max_view_ratio``
    # (median ``median_view_ratio``), either view being the larger one.
    images_per_view: int | None = None
    min_per_view: int = 5
    max_per_view: int = 60
    median_view_ratio: float = 1.3
    max_view_ratio: float = 4.0
    extra_view_fraction: float = 0.15  # extra side/front-side/rear-side/uncertain images
    # near-duplicates: this fraction of the front/rear photos gets a re-encoded (other JPEG
    # quality) or slightly resized copy in the same model (at least one when > 0)
    near_duplicate_fraction: float = 0.03
    width: int = 320
    height: int = 240
    seed: int = 0
    jpeg_quality: int = 88
    broken: bool = True  # plant the broken inputs (see PLANTED_REASONS)

    def __post_init__(self) -> None:
        if self.n_makes < 1 or self.models_per_make < 1 or (self.images_per_view or 1) < 1:
            raise ValueError("n_makes, models_per_make and images_per_view must be >= 1")
        if not 1 <= self.min_per_view <= self.max_per_view:
            raise ValueError("need 1 <= min_per_view <= max_per_view")
        if not 1.0 < self.median_view_ratio < self.max_view_ratio:
            raise ValueError("need 1 < median_view_ratio < max_view_ratio")
        if not 0.0 <= self.near_duplicate_fraction <= 0.5:
            raise ValueError("near_duplicate_fraction must be in [0, 0.5]")
        if self.n_makes > MAX_MAKE_ID or self.n_makes * self.models_per_make > MAX_MODEL_ID // 2:
            raise ValueError("too many makes/models for the CompCars id space")
        if not 0.0 <= self.extra_view_fraction <= 2.0:
            raise ValueError("extra_view_fraction must be in [0, 2]")
        if self.width < 64 or self.height < 48:
            raise ValueError("width/height must be at least 64x48")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError("jpeg_quality must be in [1, 95]")


TINY = SampleSpec(n_makes=3, models_per_make=2, min_per_view=3, max_per_view=9, width=128,
                  height=96, near_duplicate_fraction=0.02)


@dataclass(frozen=True)
class MakeTraits:
    """Family traits shared by all models of one make."""

    make_id: int
    name: str
    grille: str
    headlight: str
    taillight: str
    badge: str
    chrome_grille: bool


@dataclass(frozen=True)
class ModelTraits:
    """Per-model shape parameters (fractions of the car's bounding box)."""

    model_id: int
    make_id: int
    name: str
    years: tuple[str, ...]
    colours: tuple[str, ...]
    car_type: int
    aspect: float  # front/rear bbox width / height
    cabin_h: float  # greenhouse height / car height
    cabin_w: float  # greenhouse bottom width / body width
    taper: float  # roof width / greenhouse bottom width
    clearance: float  # ground clearance / car height
    bumper_v: float  # bumper top, fraction of the lower body height
    wheel_w: float  # tyre width / car width
    grille_w: float
    grille_h: float
    grille_n: int
    light_w: float
    light_h: float
    light_v: float
    window_style: str
    window_inset: float
    roof_thick: float
    front_plate_v: float
    rear_plate_on_trunk: bool
    exhaust: str
    spoiler: bool
    side_aspect: float


@dataclass
class _Job:
    """One file to write (image + optional label)."""

    rel: str  # "<make>/<model>/<year>/<name>.jpg", relative to image/
    make_idx: int
    model_idx: int
    viewpoint: int  # the drawn view
    key: tuple[int, ...]  # per-image rng key
    kind: str = "normal"  # normal | planted | near_duplicate
    reason: str | None = None
    note: str = ""
    label_viewpoint: int | None = None  # written viewpoint (defaults to the drawn one)
    crlf: bool = False
    bbox: tuple[int, int, int, int] | None = field(default=None)
    source: str | None = None  # near_duplicate: rel path of the photo it copies
    transform: tuple[str, float] | None = None  # ("jpeg_quality", q) | ("resize", factor)


# --------------------------------------------------------------------------- structure


def _stratified(rng: np.random.Generator, k: int, lo: float, hi: float) -> np.ndarray:
    """k values spread over [lo, hi] (one per stratum, shuffled) so siblings differ."""
    u = (rng.permutation(k) + rng.uniform(0.15, 0.85, size=k)) / k
    return lo + u * (hi - lo)


def _hex_name(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        name = "".join("0123456789abcdef"[i] for i in rng.integers(0, 16, size=14))
        if name not in used:
            used.add(name)
            return name


def _make_names(rng: np.random.Generator, n: int) -> list[str]:
    pool = [p for p in MAKE_NAME_POOL if p not in ("SAAB", "Saab")]
    order = rng.permutation(len(pool))
    names = [pool[i] for i in order[:n]] + [f"Make{i}" for i in range(len(pool), n)]
    slots = rng.permutation(n)
    if n >= 2:  # two different make ids, same name
        names[slots[0]] = DUPLICATE_MAKE_NAME
        names[slots[1]] = DUPLICATE_MAKE_NAME
    names[slots[2] if n >= 3 else slots[0]] = (
        TRAILING_SPACE_MAKE_NAME if n >= 3 else names[slots[0]] + " "
    )
    return names


def _build_structure(
    spec: SampleSpec,
) -> tuple[list[MakeTraits], list[ModelTraits]]:
    rng = np.random.default_rng([spec.seed, 1])
    n_models = spec.n_makes * spec.models_per_make
    make_ids = np.sort(rng.choice(np.arange(1, MAX_MAKE_ID + 1), spec.n_makes, replace=False))
    model_ids = np.sort(rng.choice(np.arange(1, MAX_MODEL_ID + 1), n_models, replace=False))
    names = _make_names(rng, spec.n_makes)
    perms = {
        "grille": rng.permutation(len(GRILLE_STYLES)),
        "headlight": rng.permutation(len(HEADLIGHT_SHAPES)),
        "taillight": rng.permutation(len(TAILLIGHT_STYLES)),
        "badge": rng.permutation(len(BADGE_SHAPES)),
    }
    makes = []
    for i in range(spec.n_makes):
        makes.append(
            MakeTraits(
                make_id=int(make_ids[i]),
                name=names[i],
                grille=GRILLE_STYLES[perms["grille"][i % len(GRILLE_STYLES)]],
                headlight=HEADLIGHT_SHAPES[perms["headlight"][i % len(HEADLIGHT_SHAPES)]],
                taillight=TAILLIGHT_STYLES[perms["taillight"][i % len(TAILLIGHT_STYLES)]],
                badge=BADGE_SHAPES[perms["badge"][(i // 2 + i) % len(BADGE_SHAPES)]],
                chrome_grille=bool(rng.random() < 0.5),
            )
        )

    stems = rng.permutation(len(MODEL_NAME_STEMS))
    used_names: set[str] = set()
    trailing_space_model = int(rng.integers(n_models))
    unknown_year_model = int(rng.integers(n_models))
    k = spec.models_per_make
    models: list[ModelTraits] = []
    for mi, make in enumerate(makes):
        s = {
            "aspect": _stratified(rng, k, 1.08, 1.55),
            "cabin_h": _stratified(rng, k, 0.27, 0.44),
            "cabin_w": _stratified(rng, k, 0.76, 0.93),
            "taper": _stratified(rng, k, 0.58, 0.9),
            "clearance": _stratified(rng, k, 0.035, 0.11),
            "bumper_v": _stratified(rng, k, 0.55, 0.78),
            "wheel_w": _stratified(rng, k, 0.085, 0.155),
            "grille_w": _stratified(rng, k, 0.26, 0.56),
            "grille_h": _stratified(rng, k, 0.2, 0.4),
            "light_w": _stratified(rng, k, 0.12, 0.23),
            "light_h": _stratified(rng, k, 0.1, 0.24),
        }
        grille_n = rng.permutation(np.arange(2, 8))
        for j in range(k):
            gi = mi * k + j
            while True:
                name = MODEL_NAME_STEMS[stems[gi % len(stems)]] + str(
                    MODEL_SUFFIXES[int(rng.integers(len(MODEL_SUFFIXES)))]
                )
                if gi >= len(stems):
                    name += f" {gi // len(stems) + 1}"
                if name not in used_names:
                    break
            used_names.add(name)
            if gi == trailing_space_model:
                name += " "
            n_years = int(rng.integers(1, 4))
            years = [
                str(y) for y in np.sort(rng.choice(np.arange(2005, 2016), n_years, replace=False))
            ]
            if gi == unknown_year_model or rng.random() < 0.15:
                years[-1] = "unknown"
            colours = rng.choice(len(PALETTE_NAMES), int(rng.integers(3, 5)), replace=False)
            models.append(
                ModelTraits(
                    model_id=int(model_ids[gi]),
                    make_id=make.make_id,
                    name=name,
                    years=tuple(years),
                    colours=tuple(PALETTE_NAMES[c] for c in np.sort(colours)),
                    car_type=int(rng.integers(1, 13)),
                    aspect=float(s["aspect"][j]),
                    cabin_h=float(s["cabin_h"][j]),
                    cabin_w=float(s["cabin_w"][j]),
                    taper=float(s["taper"][j]),
                    clearance=float(s["clearance"][j]),
                    bumper_v=float(s["bumper_v"][j]),
                    wheel_w=float(s["wheel_w"][j]),
                    grille_w=float(s["grille_w"][j]),
                    grille_h=float(s["grille_h"][j]),
                    grille_n=int(grille_n[j % len(grille_n)]),
                    light_w=float(s["light_w"][j]),
                    light_h=float(s["light_h"][j]),
                    light_v=float(rng.uniform(0.08, 0.3)),
                    window_style=WINDOW_STYLES[int(rng.integers(len(WINDOW_STYLES)))],
                    window_inset=float(rng.uniform(0.05, 0.13)),
                    roof_thick=float(rng.uniform(0.08, 0.26)),
                    front_plate_v=float(rng.uniform(0.25, 0.7)),
                    rear_plate_on_trunk=bool(rng.random() < 0.5),
                    exhaust=EXHAUST_LAYOUTS[int(rng.integers(len(EXHAUST_LAYOUTS)))],
                    spoiler=bool(rng.random() < 0.35),
                    side_aspect=float(rng.uniform(2.2, 2.9)),
                )
            )
    # at least one model of unknown car type (type 0)
    zero = int(rng.integers(n_models))
    models[zero] = replace(models[zero], car_type=0)
    return makes, models


# --------------------------------------------------------------------------- drawing


def _shade(c: Sequence[int], f: float) -> tuple[int, int, int, int]:
    return (
        int(min(255, max(0, c[0] * f))),
        int(min(255, max(0, c[1] * f))),
        int(min(255, max(0, c[2] * f))),
        255,
    )


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Random muted gradient with random clutter shapes."""

    def muted() -> np.ndarray:
        base = rng.uniform(55, 205)
        return np.clip(base + rng.uniform(-28, 28, size=3), 0, 255)

    c0, c1 = muted(), muted()
    ang = rng.uniform(0, 2 * math.pi)
    # linear gradient computed on a coarse grid, upsampled (cheap)
    gw, gh = w // 8 + 2, h // 8 + 2
    xs = (np.arange(gw, dtype=np.float32) / (gw - 1) - 0.5) * math.cos(ang)
    ys = (np.arange(gh, dtype=np.float32) / (gh - 1) - 0.5) * math.sin(ang)
    t = xs[None, :] + ys[:, None]
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    arr = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    img = Image.fromarray(arr.astype(np.uint8), "RGB").resize((w, h), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 20))):
        col = tuple(int(v) for v in muted())
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, size=2) * w)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, size=2) * h)
        kind = int(rng.integers(4))
        lw = int(rng.integers(1, 4))
        if kind == 0:
            d.line(
                [(x0, y0), (x1, y1)] if rng.random() < 0.5 else [(x0, y1), (x1, y0)],
                fill=col,
                width=lw,
            )
        elif kind == 1:
            d.rectangle(
                [x0, y0, x1, y1], fill=col if rng.random() < 0.5 else None, outline=col, width=lw
            )
        elif kind == 2:
            d.ellipse(
                [x0, y0, x1, y1], fill=col if rng.random() < 0.4 else None, outline=col, width=lw
            )
        else:
            yl = rng.uniform(0, h)
            d.line([(0, yl), (w, yl + rng.uniform(-0.2, 0.2) * h)], fill=col, width=lw + 1)
    return img


def _poly_xrange(poly: Sequence[tuple[float, float]], y: float) -> tuple[float, float] | None:
    """x-extent of a convex polygon at height y."""
    xs = []
    n = len(poly)
    for i in range(n):
        (xa, ya), (xb, yb) = poly[i], poly[(i + 1) % n]
        if (ya - y) * (yb - y) <= 0 and ya != yb:
            xs.append(xa + (y - ya) * (xb - xa) / (yb - ya))
    if len(xs) < 2:
        return None
    return min(xs), max(xs)


def _draw_grille(
    d: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    style: str,
    n: int,
    chrome: bool,
    lw: int,
) -> None:
    x0, y0, x1, y1 = box
    gw, gh = x1 - x0, y1 - y0
    bar = CHROME if chrome else (78, 80, 86, 255)
    frame = CHROME if chrome else (54, 56, 60, 255)
    if style == "horizontal_bars":
        d.rounded_rectangle(box, radius=gh * 0.18, fill=DARK, outline=frame, width=lw)
        for i in range(n):
            y = y0 + gh * (i + 1) / (n + 1)
            d.line([(x0 + lw * 2, y), (x1 - lw * 2, y)], fill=bar, width=max(1, lw))
    elif style == "vertical_bars":
        d.rectangle(box, fill=DARK, outline=frame, width=lw)
        m = n + 3
        for i in range(m):
            x = x0 + gw * (i + 1) / (m + 1)
            d.line([(x, y0 + lw), (x, y1 - lw)], fill=bar, width=max(1, lw))
    elif style == "mesh":
        d.rounded_rectangle(box, radius=gh * 0.1, fill=DARK, outline=frame, width=lw)
        cols, rows = n + 2, max(2, (n + 1) // 2)
        for i in range(cols):
            x = x0 + gw * (i + 1) / (cols + 1)
            d.line([(x, y0 + lw), (x, y1 - lw)], fill=bar, width=max(1, lw // 2))
        for i in range(rows):
            y = y0 + gh * (i + 1) / (rows + 1)
            d.line([(x0 + lw, y), (x1 - lw, y)], fill=bar, width=max(1, lw // 2))
    elif style == "twin_kidney":
        gap = gw * 0.08
        kw = (gw - gap) / 2
        for kx in (x0, x0 + kw + gap):
            kb = (kx, y0, kx + kw, y1)
            d.rounded_rectangle(kb, radius=min(kw, gh) * 0.35, fill=DARK, outline=CHROME, width=lw)
            for i in range(n):
                x = kx + kw * (i + 1) / (n + 1)
                d.line([(x, y0 + lw * 2), (x, y1 - lw * 2)], fill=bar, width=max(1, lw // 2))
    elif style == "single_slot":
        sh = gh * 0.38
        d.rounded_rectangle(
            (x0, y0, x1, y0 + sh), radius=sh * 0.45, fill=DARK, outline=frame, width=lw
        )
        # lower intake with n short slats
        ly0 = y0 + gh * 0.55
        d.rounded_rectangle((x0 + gw * 0.12, ly0, x1 - gw * 0.12, y1), radius=sh * 0.3, fill=DARK)
        for i in range(n):
            x = x0 + gw * 0.12 + gw * 0.76 * (i + 1) / (n + 1)
            d.line([(x, ly0 + lw), (x, y1 - lw)], fill=bar, width=max(1, lw))
    else:  # hexagon
        poly = [
            (x0 + 0.1 * gw, y0),
            (x1 - 0.1 * gw, y0),
            (x1, y0 + 0.4 * gh),
            (x1 - 0.22 * gw, y1),
            (x0 + 0.22 * gw, y1),
            (x0, y0 + 0.4 * gh),
        ]
        d.polygon(poly, fill=DARK, outline=frame, width=lw)
        for i in range(n + 1):
            y = y0 + gh * (i + 1) / (n + 2)
            xr = _poly_xrange(poly, y)
            if xr:
                d.line([(xr[0] + lw * 2, y), (xr[1] - lw * 2, y)], fill=bar, width=max(1, lw))


def _draw_headlight(
    d: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    w: float,
    h: float,
    shape: str,
    left: bool,
    lw: int,
) -> None:
    s = -1 if left else 1  # +1: outer side is to the right
    if shape == "round":
        r = min(w, h * 1.3) / 2
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=HEADLIGHT, outline=HEADLIGHT_RIM, width=lw)
        d.ellipse((cx - r / 3, cy - r / 3, cx + r / 3, cy + r / 3), fill=(200, 204, 210, 255))
    elif shape == "twin_round":
        r = min(w / 4.2, h / 2)
        for dx in (-w / 4, w / 4):
            d.ellipse(
                (cx + dx - r, cy - r, cx + dx + r, cy + r),
                fill=HEADLIGHT,
                outline=HEADLIGHT_RIM,
                width=lw,
            )
    elif shape == "rectangle":
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        d.rectangle(box, fill=HEADLIGHT, outline=HEADLIGHT_RIM, width=lw)
        d.line([(cx, cy - h / 2), (cx, cy + h / 2)], fill=HEADLIGHT_RIM, width=lw)
    elif shape == "slit":
        hh = h * 0.3
        pts = [
            (cx - s * w / 2, cy - hh / 2 + h * 0.12),
            (cx + s * w / 2, cy - hh / 2 - h * 0.12),
            (cx + s * w / 2, cy + hh / 2 - h * 0.12),
            (cx - s * w / 2, cy + hh / 2 + h * 0.12),
        ]
        d.polygon(pts, fill=HEADLIGHT, outline=HEADLIGHT_RIM, width=lw)
    else:  # trapezoid: taller at the outer side
        pts = [
            (cx - s * w / 2, cy - h * 0.2),
            (cx + s * w / 2, cy - h / 2),
            (cx + s * w / 2, cy + h / 2),
            (cx - s * w / 2, cy + h * 0.3),
        ]
        d.polygon(pts, fill=HEADLIGHT, outline=HEADLIGHT_RIM, width=lw)


def _draw_taillights(
    d: ImageDraw.ImageDraw,
    bx0: float,
    bx1: float,
    ty: float,
    bh: float,
    style: str,
    w: float,
    h: float,
    lw: int,
) -> None:
    bw = bx1 - bx0
    for left in (True, False):
        ox = bx0 if left else bx1  # outer edge
        s = 1 if left else -1  # direction towards the centre
        if style == "bar_across":
            box = sorted([ox + s * bw * 0.02, ox + s * (bw * 0.02 + w)])
            d.rectangle((box[0], ty, box[1], ty + h), fill=TAIL_RED, outline=DARK, width=lw)
            d.rectangle(
                (box[0] + w * 0.2, ty + h * 0.3, box[1] - w * 0.2, ty + h * 0.7), fill=TAIL_INNER
            )
        elif style == "vertical_strips":
            sw = max(w * 0.35, 2 * lw)
            box = sorted([ox + s * bw * 0.015, ox + s * (bw * 0.015 + sw)])
            d.rectangle(
                (box[0], ty - h * 0.3, box[1], ty + h * 1.6), fill=TAIL_RED, outline=DARK, width=lw
            )
        elif style == "round_pairs":
            r = min(w / 4.4, h * 0.55)
            for k in range(2):
                cx = ox + s * (bw * 0.03 + r + k * 2.3 * r)
                cy = ty + h / 2
                d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=TAIL_RED, outline=DARK, width=lw)
                d.ellipse((cx - r / 2.5, cy - r / 2.5, cx + r / 2.5, cy + r / 2.5), fill=TAIL_INNER)
        else:  # l_shapes
            x_o = ox + s * bw * 0.02
            x_i = ox + s * (bw * 0.02 + w)
            t = max(h * 0.35, 2 * lw)
            pts = [
                (x_o, ty),
                (x_i, ty),
                (x_i, ty + t),
                (x_o + s * t, ty + t),
                (x_o + s * t, ty + h * 1.5),
                (x_o, ty + h * 1.5),
            ]
            d.polygon(pts, fill=TAIL_RED, outline=DARK, width=lw)
    if style == "bar_across":
        d.rectangle(
            (bx0 + bw * 0.02 + w, ty + h * 0.35, bx1 - bw * 0.02 - w, ty + h * 0.6), fill=TAIL_RED
        )


def _draw_badge(
    d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, shape: str, lw: int
) -> None:
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=CHROME, outline=DARK, width=lw)
    elif shape == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=CHROME, width=max(2, int(r * 0.4)))
    elif shape == "diamond":
        d.polygon(
            [(cx, cy - r), (cx + r * 1.2, cy), (cx, cy + r), (cx - r * 1.2, cy)],
            fill=CHROME,
            outline=DARK,
        )
    elif shape == "oval":
        d.ellipse(
            (cx - r * 1.7, cy - r * 0.75, cx + r * 1.7, cy + r * 0.75),
            fill=CHROME,
            outline=DARK,
            width=lw,
        )
    else:  # shield
        d.polygon(
            [
                (cx - r, cy - r),
                (cx + r, cy - r),
                (cx + r, cy + r * 0.2),
                (cx, cy + r * 1.2),
                (cx - r, cy + r * 0.2),
            ],
            fill=CHROME,
            outline=DARK,
        )


def _jitter(model: ModelTraits, rng: np.random.Generator, amount: float = 0.03) -> dict[str, float]:
    """Per-image copy of the continuous model parameters, each scaled by 1 +- amount."""
    names = (
        "cabin_h",
        "cabin_w",
        "taper",
        "clearance",
        "bumper_v",
        "wheel_w",
        "grille_w",
        "grille_h",
        "light_w",
        "light_h",
        "light_v",
        "window_inset",
        "roof_thick",
        "front_plate_v",
    )
    return {n: getattr(model, n) * (1 + rng.uniform(-amount, amount)) for n in names}


def _draw_face(
    make: MakeTraits,
    model: ModelTraits,
    view: int,
    body_rgb: Sequence[int],
    size: tuple[int, int],
    rng: np.random.Generator,
) -> Image.Image:
    """Front (view 1) or rear (view 2) of a car, touching all four edges of the layer."""
    lw_, lh_ = size
    W, H = lw_ * SUPERSAMPLE, lh_ * SUPERSAMPLE
    img = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    p = _jitter(model, rng, 0.05)
    lw = max(1, round(W / 160))
    body = _shade(body_rgb, 1.0)
    body_dark = _shade(body_rgb, 0.72)
    body_light = _shade(body_rgb, 1.12)

    mirror = 0.045 * W
    bx0, bx1 = mirror, W - 1 - mirror
    bw = bx1 - bx0
    cab_bot = p["cabin_h"] * H
    body_bot = (1 - p["clearance"]) * H
    body_h = body_bot - cab_bot
    cx = W / 2

    # tyres (touch the bottom edge)
    tw = p["wheel_w"] * W
    ty0 = body_bot - 0.12 * body_h
    for x in (bx0 + 0.05 * bw, bx1 - 0.05 * bw - tw):
        d.rounded_rectangle((x, ty0, x + tw, H - 1), radius=tw * 0.18, fill=TYRE)

    # greenhouse (touches the top edge)
    cbw = p["cabin_w"] * bw
    ctw = cbw * p["taper"]
    cab = [
        (cx - cbw / 2, cab_bot + 2),
        (cx - ctw / 2, 0),
        (cx + ctw / 2, 0),
        (cx + cbw / 2, cab_bot + 2),
    ]
    d.polygon(cab, fill=body)
    # window (windshield or rear window)
    inset = p["window_inset"] * cbw
    top = p["roof_thick"] * cab_bot + (0.06 * cab_bot if view == 2 else 0)
    bot = cab_bot - 0.05 * cab_bot
    xr_top = _poly_xrange(cab, top) or (cx - ctw / 2, cx + ctw / 2)
    xr_bot = _poly_xrange(cab, bot) or (cx - cbw / 2, cx + cbw / 2)
    win = [
        (xr_bot[0] + inset, bot),
        (xr_top[0] + inset, top),
        (xr_top[1] - inset, top),
        (xr_bot[1] - inset, bot),
    ]
    g = rng.uniform(0.85, 1.25)
    d.polygon(win, fill=_shade(GLASS, g))
    # reflection streak
    rx = rng.uniform(0.2, 0.6)
    d.line(
        [
            (xr_bot[0] + inset + rx * cbw * 0.6, bot - 2),
            (xr_top[0] + inset + rx * ctw * 0.6 + ctw * 0.12, top + 2),
        ],
        fill=_shade(GLASS, 1.7 * g),
        width=max(1, lw * 2),
    )
    if model.window_style == "curved":
        d.ellipse(
            (cx - cbw * 0.3, bot - (bot - top) * 0.18, cx + cbw * 0.3, bot + (bot - top) * 0.18),
            fill=body,
        )
    elif model.window_style == "sunstrip":
        d.rectangle(
            (xr_top[0] + inset, top, xr_top[1] - inset, top + (bot - top) * 0.18),
            fill=_shade(GLASS, 0.55),
        )
    # mirrors (touch the left/right edges)
    my = cab_bot - 0.05 * H
    for side in (-1, 1):
        xo = 0 if side < 0 else W - 1
        xi = bx0 + 0.06 * bw if side < 0 else bx1 - 0.06 * bw
        d.polygon(
            [(xi, my), (xo, my - 0.02 * H), (xo, my + 0.05 * H), (xi, my + 0.07 * H)],
            fill=body_dark,
        )

    # lower body
    d.rounded_rectangle((bx0, cab_bot, bx1, body_bot), radius=0.07 * bw, fill=body)
    d.line(
        [(bx0 + 0.08 * bw, cab_bot + 0.06 * body_h), (bx1 - 0.08 * bw, cab_bot + 0.06 * body_h)],
        fill=body_light,
        width=lw,
    )
    bumper_y = cab_bot + p["bumper_v"] * body_h
    d.rounded_rectangle(
        (bx0 + 0.01 * bw, bumper_y, bx1 - 0.01 * bw, body_bot), radius=0.05 * bw, fill=body_dark
    )

    if view == 1:
        gw, gh = p["grille_w"] * bw, p["grille_h"] * body_h
        gy0 = cab_bot + 0.12 * body_h + p["light_v"] * 0.3 * body_h
        gy0 = min(gy0, bumper_y - 0.35 * gh)
        _draw_grille(
            d,
            (cx - gw / 2, gy0, cx + gw / 2, gy0 + gh),
            make.grille,
            model.grille_n,
            make.chrome_grille,
            lw,
        )
        _draw_badge(d, cx, gy0 - 0.06 * body_h, 0.035 * bw, make.badge, lw)
        lw_l, lh_l = p["light_w"] * bw, p["light_h"] * body_h
        ly = cab_bot + p["light_v"] * body_h + lh_l / 2
        for left in (True, False):
            lcx = bx0 + 0.035 * bw + lw_l / 2 if left else bx1 - 0.035 * bw - lw_l / 2
            _draw_headlight(d, lcx, ly, lw_l, lh_l, make.headlight, left, lw)
        # lower intake + plate
        d.rounded_rectangle(
            (cx - bw * 0.3, body_bot - 0.12 * body_h, cx + bw * 0.3, body_bot - 0.04 * body_h),
            radius=lw * 2,
            fill=DARK,
        )
        py = bumper_y + p["front_plate_v"] * (body_bot - bumper_y) * 0.6
        ph, pw = 0.07 * body_h, 0.22 * bw
        d.rectangle(
            (cx - pw / 2, py, cx + pw / 2, py + ph), fill=PLATE, outline=PLATE_TEXT, width=lw
        )
    else:
        # trunk line, spoiler, taillights, plate, exhaust
        trunk_y = cab_bot + 0.1 * body_h
        d.line([(bx0 + 0.12 * bw, trunk_y), (bx1 - 0.12 * bw, trunk_y)], fill=body_dark, width=lw)
        if model.spoiler:
            d.rectangle(
                (cx - cbw * 0.45, cab_bot - 0.02 * H, cx + cbw * 0.45, cab_bot + 0.015 * H),
                fill=DARK,
            )
        tw_l, th_l = p["light_w"] * bw * 1.1, p["light_h"] * body_h * 0.8
        ty = cab_bot + (0.08 + p["light_v"] * 0.6) * body_h
        _draw_taillights(d, bx0, bx1, ty, body_h, make.taillight, tw_l, th_l, lw)
        _draw_badge(d, cx, ty + th_l * 0.5, 0.03 * bw, make.badge, lw)
        ph, pw = 0.08 * body_h, 0.24 * bw
        py = (
            (ty + th_l + 0.05 * body_h)
            if model.rear_plate_on_trunk
            else (bumper_y + 0.15 * (body_bot - bumper_y))
        )
        py = min(py, body_bot - ph - 0.02 * body_h)
        d.rectangle(
            (cx - pw / 2, py, cx + pw / 2, py + ph), fill=PLATE, outline=PLATE_TEXT, width=lw
        )
        er = 0.028 * bw
        ey = body_bot - er * 0.6
        xs = {
            "none": [],
            "single": [bx0 + 0.2 * bw],
            "dual": [bx0 + 0.2 * bw, bx1 - 0.2 * bw],
            "twin_left": [bx0 + 0.18 * bw, bx0 + 0.18 * bw + 2.6 * er],
            "quad": [
                bx0 + 0.16 * bw,
                bx0 + 0.16 * bw + 2.6 * er,
                bx1 - 0.16 * bw,
                bx1 - 0.16 * bw - 2.6 * er,
            ],
        }[model.exhaust]
        for x in xs:
            d.ellipse(
                (x - er, ey - er * 0.7, x + er, ey + er * 0.7),
                fill=(60, 60, 64, 255),
                outline=DARK,
                width=lw,
            )
    return img.resize(size, Image.Resampling.BOX)


def _draw_side(
    model: ModelTraits, body_rgb: Sequence[int], size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """Simple side silhouette (nose to the right)."""
    lw_, lh_ = size
    W, H = lw_ * SUPERSAMPLE, lh_ * SUPERSAMPLE
    img = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    body = _shade(body_rgb, 1.0)
    r = (0.1 + model.wheel_w) * H * 1.4
    body_top, body_bot = 0.42 * H, H - 0.35 * r
    cab_l, cab_r = rng.uniform(0.18, 0.3) * W, rng.uniform(0.62, 0.76) * W
    d.polygon(
        [
            (cab_l - 0.08 * W, body_top + 2),
            (cab_l + 0.06 * W, 0),
            (cab_r - 0.04 * W, 0),
            (cab_r + 0.1 * W, body_top + 2),
        ],
        fill=body,
    )
    d.polygon(
        [
            (cab_l - 0.04 * W, body_top - 0.04 * H),
            (cab_l + 0.08 * W, 0.08 * H),
            (cab_r - 0.06 * W, 0.08 * H),
            (cab_r + 0.05 * W, body_top - 0.04 * H),
        ],
        fill=GLASS,
    )
    d.line(
        [((cab_l + cab_r) / 2, 0.08 * H), ((cab_l + cab_r) / 2, body_top)],
        fill=body,
        width=max(2, W // 80),
    )
    d.rounded_rectangle(
        (0, body_top, W - 1, body_bot), radius=0.25 * (body_bot - body_top), fill=body
    )
    for wx in (0.2 * W, 0.8 * W):
        d.ellipse((wx - r, H - 1 - 2 * r, wx + r, H - 1), fill=TYRE)
        d.ellipse(
            (wx - r * 0.55, H - 1 - r * 1.55, wx + r * 0.55, H - 1 - r * 0.45),
            fill=(150, 152, 158, 255),
        )
    d.rectangle(
        (
            W - 0.04 * W,
            body_top + 0.15 * (body_bot - body_top),
            W - 1,
            body_top + 0.35 * (body_bot - body_top),
        ),
        fill=HEADLIGHT,
    )
    d.rectangle(
        (
            0,
            body_top + 0.15 * (body_bot - body_top),
            0.03 * W,
            body_top + 0.35 * (body_bot - body_top),
        ),
        fill=TAIL_RED,
    )
    return img.resize(size, Image.Resampling.BOX)


def _draw_car(
    make: MakeTraits,
    model: ModelTraits,
    view: int,
    body_rgb: Sequence[int],
    size: tuple[int, int],
    rng: np.random.Generator,
) -> Image.Image:
    if view in (1, 2):
        return _draw_face(make, model, view, body_rgb, size, rng)
    side = _draw_side(model, body_rgb, size, rng)
    if view in (4, 5):  # oblique: squeezed face at one end of the side view
        face = _draw_face(
            make, model, 1 if view == 4 else 2, body_rgb, (max(8, size[0] * 2 // 5), size[1]), rng
        )
        x = size[0] - face.width if view == 4 else 0
        side.alpha_composite(face, (x, 0))
    if view == -1:
        side = side.filter(ImageFilter.GaussianBlur(radius=max(1.0, size[0] / 40)))
    return side


def _render_image(
    spec: SampleSpec,
    make: MakeTraits,
    model: ModelTraits,
    view: int,
    key: tuple[int, ...],
    *,
    overhang_right: bool = False,
) -> tuple[bytes, tuple[int, int, int, int]]:
    """JPEG bytes and the 1-based inclusive bbox (x1, y1, x2, y2) of the drawn car."""
    rng = np.random.default_rng([spec.seed, *key])
    W, H = spec.width, spec.height
    aspect = model.aspect if view in (1, 2) else model.side_aspect
    aspect *= 1 + rng.uniform(-0.03, 0.03)
    w_max = min(0.82 * W, 0.88 * H * aspect)
    w_min = min(0.4 * W, w_max)
    w = int(round(rng.uniform(w_min, w_max)))
    h = max(8, min(H, int(round(w / aspect))))
    colour = PALETTE[model.colours[int(rng.integers(len(model.colours)))]]
    bright = rng.uniform(0.85, 1.15)
    body_rgb = [c * bright + rng.uniform(-8, 8) for c in colour]

    car = _draw_car(make, model, view, body_rgb, (w, h), rng)
    angle = float(rng.uniform(-2.5, 2.5))  # slight camera roll
    car = car.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    tight = car.getchannel("A").point(lambda a: 255 if a >= 96 else 0).getbbox()
    if tight is None:  # pragma: no cover - cannot happen for drawn cars
        raise RuntimeError("empty car layer")
    car = car.crop(tight)
    w, h = car.size
    w, h = min(w, W), min(h, H)
    car = car.crop((0, 0, w, h))
    if overhang_right:
        x0 = W - w + max(1, int(0.03 * w))
    else:
        x0 = int(rng.integers(0, W - w + 1))
    y0 = int(rng.integers(0, H - h + 1))

    img = _background(rng, W, H)
    d = ImageDraw.Draw(img, "RGBA")
    d.ellipse((x0 - 0.03 * w, y0 + h * 0.9, x0 + w * 1.03, y0 + h + 0.05 * h), fill=(0, 0, 0, 70))
    img.paste(car, (x0, y0), car)

    arr = np.asarray(img, dtype=np.int16)
    sigma = rng.uniform(2.0, 5.0)
    noise = (rng.standard_normal(arr.shape[:2], dtype=np.float32) * sigma).astype(np.int16)
    arr = np.clip(arr + noise[..., None], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=spec.jpeg_quality, optimize=False)
    return buf.getvalue(), (x0 + 1, y0 + 1, x0 + w, y0 + h)


# --------------------------------------------------------------------------- files


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


def _view_counts(spec: SampleSpec, rng: np.random.Generator, n_models: int) -> list[tuple[int, int]]:
    """(n_front, n_rear) per model: unequal views and unequal class sizes (see SampleSpec).

    The ratio larger:smaller view is ``max_view_ratio ** (u ** k)`` for stratified ``u`` in
    (0, 1), with ``k`` set so that its median is ``median_view_ratio``; the smaller view is
    log-uniform in ``[min_per_view, max_per_view / ratio]``; a coin decides which view is larger.
    """
    if spec.images_per_view is not None:
        return [(spec.images_per_view, spec.images_per_view)] * n_models
    k = math.log(math.log(spec.median_view_ratio) / math.log(spec.max_view_ratio)) / math.log(0.5)
    ratios = spec.max_view_ratio ** (_stratified(rng, n_models, 0.0, 1.0) ** k)
    sizes = _stratified(rng, n_models, 0.0, 1.0)
    out = []
    for ratio, u in zip(ratios, sizes, strict=True):
        lo = math.log(spec.min_per_view)
        hi = math.log(max(spec.min_per_view, spec.max_per_view / ratio))
        small = int(round(math.exp(lo + u * (hi - lo))))
        big = max(small, min(spec.max_per_view, int(round(small * ratio))))
        out.append((big, small) if rng.random() < 0.5 else (small, big))
    return out


NEAR_DUPLICATE_TRANSFORMS = (("jpeg_quality", 60.0), ("resize", 0.9), ("jpeg_quality", 95.0),
                             ("resize", 0.8))


def _plan_jobs(spec: SampleSpec, makes: list[MakeTraits], models: list[ModelTraits]) -> list[_Job]:
    rng = np.random.default_rng([spec.seed, 2])
    used_names: set[str] = set()
    make_idx = {m.make_id: i for i, m in enumerate(makes)}
    jobs: list[_Job] = []
    counts = _view_counts(spec, np.random.default_rng([spec.seed, 7]), len(models))

    def rel_for(mi: int, year: str) -> str:
        m = models[mi]
        return f"{m.make_id}/{m.model_id}/{year}/{_hex_name(rng, used_names)}.jpg"

    for mi, model in enumerate(models):
        n_front, n_rear = counts[mi]
        n_extra = int(round(spec.extra_view_fraction * (n_front + n_rear)))
        views = [1] * n_front + [2] * n_rear
        views += [int(v) for v in rng.choice(EXTRA_VIEWPOINTS, n_extra, p=EXTRA_VIEWPOINT_P)]
        # every year folder gets at least one image
        ny = len(model.years)
        years = [
            model.years[k] if k < ny else model.years[int(rng.integers(ny))]
            for k in range(len(views))
        ]
        order = rng.permutation(len(views))
        for k, vi in enumerate(order):
            view = views[vi]
            jobs.append(
                _Job(
                    rel=rel_for(mi, years[k]),
                    make_idx=make_idx[model.make_id],
                    model_idx=mi,
                    viewpoint=view,
                    key=(3, model.model_id, int(vi)),
                    crlf=bool(rng.random() < 1 / 3),
                )
            )

    # near-duplicates: the same photo again in the same model (re-encoded or slightly resized)
    front_rear = [j for j in jobs if j.viewpoint in (1, 2)]
    n_dup = int(round(spec.near_duplicate_fraction * len(front_rear)))
    if spec.near_duplicate_fraction > 0:
        n_dup = max(1, n_dup)
    for k, si in enumerate(np.sort(rng.choice(len(front_rear), n_dup, replace=False))):
        src = front_rear[int(si)]
        model = models[src.model_idx]
        jobs.append(
            _Job(
                rel=rel_for(src.model_idx, model.years[int(rng.integers(len(model.years)))]),
                make_idx=src.make_idx,
                model_idx=src.model_idx,
                viewpoint=src.viewpoint,
                key=src.key,
                kind="near_duplicate",
                crlf=bool(rng.random() < 1 / 3),
                source=src.rel,
                transform=NEAR_DUPLICATE_TRANSFORMS[k % len(NEAR_DUPLICATE_TRANSFORMS)],
            )
        )

    if spec.broken:
        targets = rng.permutation(len(models))
        plan = [
            (
                REASON_DECODE_ERROR,
                1,
                "truncated JPEG (~40% of its bytes); header opens, decoding fails",
            ),
            (REASON_MISSING_LABEL, 1, "image without a label file"),
            (REASON_BBOX_OUTSIDE, 2, "bbox mostly right of the image (70% of its width outside)"),
            (REASON_DEGENERATE_BBOX, 1, "bbox with x2 == x1 (zero width)"),
            (REASON_NOT_AN_IMAGE, 2, "HTML error page saved with a .jpg extension"),
            (REASON_UNKNOWN_VIEWPOINT, 1, "valid image, label viewpoint code 7"),
            (None, 2, "clipped"),
        ]
        for k, (reason, view, note) in enumerate(plan):
            mi = int(targets[k % len(models)])
            model = models[mi]
            jobs.append(
                _Job(
                    rel=rel_for(mi, model.years[0]),
                    make_idx=make_idx[model.make_id],
                    model_idx=mi,
                    viewpoint=view,
                    key=(4, model.model_id, k),
                    kind="planted",
                    reason=reason,
                    note=note,
                    label_viewpoint=7 if reason == REASON_UNKNOWN_VIEWPOINT else None,
                    crlf=bool(rng.random() < 1 / 3),
                )
            )
    return jobs


def _write_job(
    root: Path, spec: SampleSpec, job: _Job, makes: list[MakeTraits], models: list[ModelTraits]
) -> None:
    img_path = root / "image" / job.rel
    lbl_path = root / "label" / (job.rel[: -len(".jpg")] + ".txt")
    img_path.parent.mkdir(parents=True, exist_ok=True)
    make, model = makes[job.make_idx], models[job.model_idx]
    data, bbox = _render_image(
        spec, make, model, job.viewpoint, job.key, overhang_right=job.note == "clipped"
    )
    W = spec.width
    if job.reason == REASON_DECODE_ERROR:
        data = data[: int(len(data) * 0.4)]
    elif job.reason == REASON_NOT_AN_IMAGE:
        data = NOT_AN_IMAGE_BYTES
    elif job.reason == REASON_BBOX_OUTSIDE:
        bw = bbox[2] - bbox[0] + 1
        x1 = W - int(round(0.3 * bw))
        bbox = (x1, bbox[1], x1 + bw - 1, bbox[3])
    elif job.reason == REASON_DEGENERATE_BBOX:
        bbox = (bbox[0], bbox[1], bbox[0], bbox[3])
    if job.transform is not None:
        data, bbox = _near_duplicate(data, bbox, job.transform, spec.jpeg_quality)
    job.bbox = bbox
    img_path.write_bytes(data)
    if job.reason != REASON_MISSING_LABEL:
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
    root: Path, spec: SampleSpec, jobs: list[_Job], models: list[ModelTraits]
) -> dict[str, Any]:
    rng = np.random.default_rng([spec.seed, 5])
    train, test = [], []
    for job in jobs:
        (train if rng.random() < 0.7 else test).append(job.rel)
    used = {Path(j.rel).stem for j in jobs}
    missing = []
    for _ in range(2):
        m = models[int(rng.integers(len(models)))]
        missing.append(f"{m.make_id}/{m.model_id}/{m.years[0]}/{_hex_name(rng, used)}.jpg")
    train.append(missing[0])
    test.append(missing[1])
    split_dir = root / "train_test_split" / "classification"
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        (split_dir / f"{name}.txt").write_bytes(("\n".join(sorted(rows)) + "\n").encode("ascii"))
    return {"train": len(train), "test": len(test), "missing_listed": missing}


def _summary(
    spec: SampleSpec,
    makes: list[MakeTraits],
    models: list[ModelTraits],
    jobs: list[_Job],
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
        "generator": "compcars_kedro.sample",
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
                "label_bbox": list(j.bbox) if j.bbox and j.reason != REASON_MISSING_LABEL else None,
            }
            for j in jobs
            if j.kind == "planted"
        ],
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
    existing = _load_info(out)
    if out.exists() and any(out.iterdir()):
        if existing is None or existing.get("generator") != "compcars_kedro.sample":
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

    makes, models = _build_structure(spec)
    jobs = _plan_jobs(spec, makes, models)
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
        for job in tqdm(jobs, desc="sample images", unit="img", disable=None):
            _write_job(tmp, spec, job, makes, models)
        _write_misc(tmp, makes, models, np.random.default_rng([spec.seed, 6]))
        split = _write_split(tmp, spec, jobs, models)
        info = _summary(spec, makes, models, jobs, split)
        (tmp / "sample_info.json").write_text(
            json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
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


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m compcars_kedro.sample --out DIR [options]``."""
    ap = argparse.ArgumentParser(prog="compcars-sample", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", required=True, type=Path, help="output directory (the CompCars data/ root)"
    )
    ap.add_argument(
        "--tiny", action="store_true", help="start from the TINY spec instead of the default"
    )
    ap.add_argument("--n-makes", type=int)
    ap.add_argument("--models-per-make", type=int)
    ap.add_argument("--images-per-view", type=int)
    ap.add_argument("--min-per-view", type=int)
    ap.add_argument("--max-per-view", type=int)
    ap.add_argument("--extra-view-fraction", type=float)
    ap.add_argument("--near-duplicate-fraction", type=float)
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--jpeg-quality", type=int)
    ap.add_argument("--no-broken", action="store_true", help="do not plant broken inputs")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing generated sample")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    base = TINY if args.tiny else SampleSpec()
    overrides: dict[str, Any] = {
        k: getattr(args, k)
        for k in (
            "n_makes",
            "models_per_make",
            "images_per_view",
            "min_per_view",
            "max_per_view",
            "extra_view_fraction",
            "near_duplicate_fraction",
            "width",
            "height",
            "seed",
            "jpeg_quality",
        )
        if getattr(args, k) is not None
    }
    if args.no_broken:
        overrides["broken"] = False
    try:
        spec = replace(base, **overrides)
        generate_sample(args.out, spec, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
