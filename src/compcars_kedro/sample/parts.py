"""Car parts drawn on a PIL layer: grilles, headlights, taillights, badges, and their colours.

Pure geometry (no random draws): every part is placed by its caller in ``drawing.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import ImageDraw

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


def shade(c: Sequence[int], f: float) -> tuple[int, int, int, int]:
    return (
        int(min(255, max(0, c[0] * f))),
        int(min(255, max(0, c[1] * f))),
        int(min(255, max(0, c[2] * f))),
        255,
    )


def poly_xrange(poly: Sequence[tuple[float, float]], y: float) -> tuple[float, float] | None:
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


def draw_grille(
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
            xr = poly_xrange(poly, y)
            if xr:
                d.line([(xr[0] + lw * 2, y), (xr[1] - lw * 2, y)], fill=bar, width=max(1, lw))


def draw_headlight(
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


def draw_taillights(
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


def draw_badge(
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

