"""The front (view 1) or rear (view 2) of a car: the part of the drawing that tells models apart.

A face is drawn at ``SUPERSAMPLE`` times its size and downsampled. ``_jitter`` draws the
per-image proportions first; the window's glass shade and reflection are the only other random
draws (in that order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from compcars_kedro.sample.parts import (
    DARK,
    GLASS,
    PLATE,
    PLATE_TEXT,
    TYRE,
    draw_badge,
    draw_grille,
    draw_headlight,
    draw_taillights,
    poly_xrange,
    shade,
)
from compcars_kedro.sample.spec import SUPERSAMPLE, MakeTraits, ModelTraits


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


@dataclass(frozen=True)
class _Face:
    """Geometry and colours of one face, in supersampled pixels."""

    W: int
    H: int
    p: dict[str, float]  # the jittered model parameters
    lw: int  # line width
    body: tuple[int, int, int, int]
    body_dark: tuple[int, int, int, int]
    body_light: tuple[int, int, int, int]
    bx0: float  # body left / right edges (inside the mirrors)
    bx1: float
    bw: float
    cab_bot: float  # greenhouse bottom = lower body top
    body_bot: float
    body_h: float
    cx: float
    cbw: float  # greenhouse bottom width
    bumper_y: float


def _face_geometry(
    model: ModelTraits, body_rgb: Sequence[int], size: tuple[int, int], rng: np.random.Generator
) -> _Face:
    lw_, lh_ = size
    W, H = lw_ * SUPERSAMPLE, lh_ * SUPERSAMPLE
    p = _jitter(model, rng, 0.05)
    mirror = 0.045 * W
    bx0, bx1 = mirror, W - 1 - mirror
    bw = bx1 - bx0
    cab_bot = p["cabin_h"] * H
    body_bot = (1 - p["clearance"]) * H
    body_h = body_bot - cab_bot
    return _Face(
        W=W, H=H, p=p, lw=max(1, round(W / 160)),
        body=shade(body_rgb, 1.0), body_dark=shade(body_rgb, 0.72),
        body_light=shade(body_rgb, 1.12),
        bx0=bx0, bx1=bx1, bw=bw, cab_bot=cab_bot, body_bot=body_bot, body_h=body_h, cx=W / 2,
        cbw=p["cabin_w"] * bw, bumper_y=cab_bot + p["bumper_v"] * body_h,
    )


def _draw_tyres(d: ImageDraw.ImageDraw, f: _Face) -> None:
    """Tyres (touch the bottom edge)."""
    tw = f.p["wheel_w"] * f.W
    ty0 = f.body_bot - 0.12 * f.body_h
    for x in (f.bx0 + 0.05 * f.bw, f.bx1 - 0.05 * f.bw - tw):
        d.rounded_rectangle((x, ty0, x + tw, f.H - 1), radius=tw * 0.18, fill=TYRE)


def _draw_window(
    d: ImageDraw.ImageDraw, f: _Face, cab: list[tuple[float, float]], ctw: float,
    model: ModelTraits, view: int, rng: np.random.Generator,
) -> None:
    """Windshield (front) or rear window, its reflection streak and the window style."""
    p, cx, cbw, cab_bot, lw, body = f.p, f.cx, f.cbw, f.cab_bot, f.lw, f.body
    inset = p["window_inset"] * cbw
    top = p["roof_thick"] * cab_bot + (0.06 * cab_bot if view == 2 else 0)
    bot = cab_bot - 0.05 * cab_bot
    xr_top = poly_xrange(cab, top) or (cx - ctw / 2, cx + ctw / 2)
    xr_bot = poly_xrange(cab, bot) or (cx - cbw / 2, cx + cbw / 2)
    win = [
        (xr_bot[0] + inset, bot),
        (xr_top[0] + inset, top),
        (xr_top[1] - inset, top),
        (xr_bot[1] - inset, bot),
    ]
    g = rng.uniform(0.85, 1.25)
    d.polygon(win, fill=shade(GLASS, g))
    # reflection streak
    rx = rng.uniform(0.2, 0.6)
    d.line(
        [
            (xr_bot[0] + inset + rx * cbw * 0.6, bot - 2),
            (xr_top[0] + inset + rx * ctw * 0.6 + ctw * 0.12, top + 2),
        ],
        fill=shade(GLASS, 1.7 * g),
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
            fill=shade(GLASS, 0.55),
        )


def _draw_greenhouse(
    d: ImageDraw.ImageDraw, f: _Face, model: ModelTraits, view: int, rng: np.random.Generator
) -> None:
    """Greenhouse (touches the top edge), its window, and the mirrors (touch left/right)."""
    cx, cbw, cab_bot, W, H = f.cx, f.cbw, f.cab_bot, f.W, f.H
    ctw = cbw * f.p["taper"]
    cab = [
        (cx - cbw / 2, cab_bot + 2),
        (cx - ctw / 2, 0),
        (cx + ctw / 2, 0),
        (cx + cbw / 2, cab_bot + 2),
    ]
    d.polygon(cab, fill=f.body)
    _draw_window(d, f, cab, ctw, model, view, rng)
    my = cab_bot - 0.05 * H
    for side in (-1, 1):
        xo = 0 if side < 0 else W - 1
        xi = f.bx0 + 0.06 * f.bw if side < 0 else f.bx1 - 0.06 * f.bw
        d.polygon(
            [(xi, my), (xo, my - 0.02 * H), (xo, my + 0.05 * H), (xi, my + 0.07 * H)],
            fill=f.body_dark,
        )


def _draw_lower_body(d: ImageDraw.ImageDraw, f: _Face) -> None:
    bx0, bx1, bw, cab_bot, body_h = f.bx0, f.bx1, f.bw, f.cab_bot, f.body_h
    d.rounded_rectangle((bx0, cab_bot, bx1, f.body_bot), radius=0.07 * bw, fill=f.body)
    d.line(
        [(bx0 + 0.08 * bw, cab_bot + 0.06 * body_h), (bx1 - 0.08 * bw, cab_bot + 0.06 * body_h)],
        fill=f.body_light,
        width=f.lw,
    )
    d.rounded_rectangle(
        (bx0 + 0.01 * bw, f.bumper_y, bx1 - 0.01 * bw, f.body_bot), radius=0.05 * bw,
        fill=f.body_dark,
    )


def _draw_front(d: ImageDraw.ImageDraw, f: _Face, make: MakeTraits, model: ModelTraits) -> None:
    """Grille, badge, headlights, lower intake and plate."""
    p, bw, body_h, cab_bot, cx, lw = f.p, f.bw, f.body_h, f.cab_bot, f.cx, f.lw
    bx0, bx1, bumper_y, body_bot = f.bx0, f.bx1, f.bumper_y, f.body_bot
    gw, gh = p["grille_w"] * bw, p["grille_h"] * body_h
    gy0 = cab_bot + 0.12 * body_h + p["light_v"] * 0.3 * body_h
    gy0 = min(gy0, bumper_y - 0.35 * gh)
    draw_grille(
        d,
        (cx - gw / 2, gy0, cx + gw / 2, gy0 + gh),
        make.grille,
        model.grille_n,
        make.chrome_grille,
        lw,
    )
    draw_badge(d, cx, gy0 - 0.06 * body_h, 0.035 * bw, make.badge, lw)
    lw_l, lh_l = p["light_w"] * bw, p["light_h"] * body_h
    ly = cab_bot + p["light_v"] * body_h + lh_l / 2
    for left in (True, False):
        lcx = bx0 + 0.035 * bw + lw_l / 2 if left else bx1 - 0.035 * bw - lw_l / 2
        draw_headlight(d, lcx, ly, lw_l, lh_l, make.headlight, left, lw)
    # lower intake + plate
    d.rounded_rectangle(
        (cx - bw * 0.3, body_bot - 0.12 * body_h, cx + bw * 0.3, body_bot - 0.04 * body_h),
        radius=lw * 2,
        fill=DARK,
    )
    py = bumper_y + p["front_plate_v"] * (body_bot - bumper_y) * 0.6
    ph, pw = 0.07 * body_h, 0.22 * bw
    d.rectangle((cx - pw / 2, py, cx + pw / 2, py + ph), fill=PLATE, outline=PLATE_TEXT, width=lw)


def _draw_exhausts(d: ImageDraw.ImageDraw, f: _Face, layout: str) -> None:
    bx0, bx1, bw = f.bx0, f.bx1, f.bw
    er = 0.028 * bw
    ey = f.body_bot - er * 0.6
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
    }[layout]
    for x in xs:
        d.ellipse(
            (x - er, ey - er * 0.7, x + er, ey + er * 0.7),
            fill=(60, 60, 64, 255),
            outline=DARK,
            width=f.lw,
        )


def _draw_rear(d: ImageDraw.ImageDraw, f: _Face, make: MakeTraits, model: ModelTraits) -> None:
    """Trunk line, spoiler, taillights, badge, plate, exhaust."""
    p, bw, body_h, cab_bot, cx, lw = f.p, f.bw, f.body_h, f.cab_bot, f.cx, f.lw
    bx0, bx1, bumper_y, body_bot = f.bx0, f.bx1, f.bumper_y, f.body_bot
    trunk_y = cab_bot + 0.1 * body_h
    d.line([(bx0 + 0.12 * bw, trunk_y), (bx1 - 0.12 * bw, trunk_y)], fill=f.body_dark, width=lw)
    if model.spoiler:
        d.rectangle(
            (cx - f.cbw * 0.45, cab_bot - 0.02 * f.H, cx + f.cbw * 0.45, cab_bot + 0.015 * f.H),
            fill=DARK,
        )
    tw_l, th_l = p["light_w"] * bw * 1.1, p["light_h"] * body_h * 0.8
    ty = cab_bot + (0.08 + p["light_v"] * 0.6) * body_h
    draw_taillights(d, bx0, bx1, ty, body_h, make.taillight, tw_l, th_l, lw)
    draw_badge(d, cx, ty + th_l * 0.5, 0.03 * bw, make.badge, lw)
    ph, pw = 0.08 * body_h, 0.24 * bw
    py = (
        (ty + th_l + 0.05 * body_h)
        if model.rear_plate_on_trunk
        else (bumper_y + 0.15 * (body_bot - bumper_y))
    )
    py = min(py, body_bot - ph - 0.02 * body_h)
    d.rectangle((cx - pw / 2, py, cx + pw / 2, py + ph), fill=PLATE, outline=PLATE_TEXT, width=lw)
    _draw_exhausts(d, f, model.exhaust)


def draw_face(
    make: MakeTraits,
    model: ModelTraits,
    view: int,
    body_rgb: Sequence[int],
    size: tuple[int, int],
    rng: np.random.Generator,
) -> Image.Image:
    """Front (view 1) or rear (view 2) of a car, touching all four edges of the layer."""
    f = _face_geometry(model, body_rgb, size, rng)
    img = Image.new("RGBA", (f.W, f.H), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    _draw_tyres(d, f)
    _draw_greenhouse(d, f, model, view, rng)
    _draw_lower_body(d, f)
    if view == 1:
        _draw_front(d, f, make, model)
    else:
        _draw_rear(d, f, make, model)
    return img.resize(size, Image.Resampling.BOX)
