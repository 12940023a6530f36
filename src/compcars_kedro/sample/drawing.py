"""One sample photo: a drawn car (face, side or oblique view) on a cluttered background.

``render_image`` seeds its generator from the job's key (``[spec.seed, *key]``), so every image
is reproducible on its own; its draws are, in order: size and colour, the car drawing, the roll
angle, the position, the background, the noise.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from compcars_kedro.sample.face import draw_face
from compcars_kedro.sample.parts import GLASS, HEADLIGHT, TAIL_RED, TYRE, shade
from compcars_kedro.sample.spec import PALETTE, SUPERSAMPLE, MakeTraits, ModelTraits, SampleSpec


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


def _draw_side(
    model: ModelTraits, body_rgb: Sequence[int], size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """Simple side silhouette (nose to the right)."""
    lw_, lh_ = size
    W, H = lw_ * SUPERSAMPLE, lh_ * SUPERSAMPLE
    img = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    body = shade(body_rgb, 1.0)
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
        return draw_face(make, model, view, body_rgb, size, rng)
    side = _draw_side(model, body_rgb, size, rng)
    if view in (4, 5):  # oblique: squeezed face at one end of the side view
        face = draw_face(
            make, model, 1 if view == 4 else 2, body_rgb, (max(8, size[0] * 2 // 5), size[1]), rng
        )
        x = size[0] - face.width if view == 4 else 0
        side.alpha_composite(face, (x, 0))
    if view == -1:
        side = side.filter(ImageFilter.GaussianBlur(radius=max(1.0, size[0] / 40)))
    return side


def render_image(
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

