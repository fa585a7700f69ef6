"""Item images of the synthetic catalogue: small PNGs whose palette comes from the item's
style and whose shape and texture come from its topic, with per-item jitter and noise."""

from __future__ import annotations

import colorsys
import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from model.data.synth_vocab import Style

_SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "bars", "star")
_TEXTURES = ("stripes", "dots", "gradient", "checker")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


@functools.cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1) (cached: read-only, shared by threads)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def render_image(size: int, style: Style, topic: int, rng: np.random.Generator) -> Image.Image:
    """One item image: palette from the style, shape + texture from the topic, item noise."""
    hue = style.hue + rng.normal(0.0, 0.02)
    bg = _hsv(hue, 0.35 + rng.normal(0, 0.05), 0.92 + rng.normal(0, 0.03)) * 255
    fg = _hsv(hue + 0.04, 0.75 + rng.normal(0, 0.05), 0.70 + rng.normal(0, 0.05)) * 255
    accent = _hsv(hue + 0.5, 0.8, 0.55 + rng.normal(0, 0.05)) * 255  # complementary shape

    yy, xx = _grid(size)
    texture = _TEXTURES[(topic * 3 + topic // len(_TEXTURES)) % len(_TEXTURES)]
    angle = (topic * 0.7) + rng.normal(0.0, 0.15)  # topic-specific direction, jittered
    u = xx * math.cos(angle) + yy * math.sin(angle)
    freq = 4 + (topic % 3) * 2
    if texture == "stripes":
        mix = (np.sin(u * freq * 2 * math.pi + rng.uniform(0, 6.3)) > 0).astype(np.float32)
    elif texture == "dots":
        p = 1.0 / freq
        dx = (xx + rng.uniform(0, p)) % p - p / 2
        dy = (yy + rng.uniform(0, p)) % p - p / 2
        mix = ((dx * dx + dy * dy) < (0.3 * p) ** 2).astype(np.float32)
    elif texture == "gradient":
        mix = np.clip(u - u.min(), 0, None) / max(float(np.ptp(u)), 1e-6)
    else:  # checker
        p = 1.0 / freq
        mix = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32)
    mix = mix[..., None] * 0.6  # keep the texture lighter than the shape
    arr = bg * (1 - mix) + fg * mix
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(img)
    shape = _SHAPES[topic % len(_SHAPES)]
    cx, cy = (0.5 + rng.normal(0, 0.06, 2)) * size
    r = size * (0.28 + rng.normal(0, 0.03))
    col = tuple(int(c) for c in np.clip(accent, 0, 255))
    width = max(1, size // 12)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=col)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=2 * width)
    elif shape == "cross":
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=col)
        draw.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=col)
    elif shape == "bars":
        for j in range(3):
            x0 = cx - r + j * (2 * r / 3)
            draw.rectangle([x0, cy - r * (0.4 + 0.3 * j), x0 + r / 2, cy + r], fill=col)
    else:  # star
        pts = []
        for j in range(10):
            rr = r if j % 2 == 0 else r * 0.45
            a = -math.pi / 2 + j * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        draw.polygon(pts, fill=col)

    # Per-item pixel noise: two images of one topic/style are similar, never identical.
    out = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 6.0, (size, size, 3))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
