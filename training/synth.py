"""Procedurally drawn, labelled image set that a CNN can genuinely learn.

Every class is defined by a *shape* (circle, star, arrow, ...) or a *pattern*
(stripes, checkerboard, spiral, ...). Colours, sizes, aspect ratios,
backgrounds, clutter, position, scale and rotation are random for every image,
so a network can only separate the classes by learning shape and texture.

The generator writes an ImageFolder-style tree::

    OUT/train/<class_name>/<class_name>_<index:05d>.jpg|.png
    OUT/val/<class_name>/<class_name>_<index:05d>.jpg|.png

Only Pillow and numpy are used. Output is byte-for-byte deterministic for a
given seed: every image draws from its own generator seeded with
``(seed, class_index, image_index)``, never from global random state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from core.durable import write_atomic

__all__ = ["CLASS_NAMES", "PATTERN_NAMES", "SHAPE_NAMES", "draw_image", "generate"]

# A drawable layer: polygon vertices in unit coordinates (object radius ~1) and the
# mask value to paint them with (255 = object, 0 = cut a hole).
Layer = tuple[np.ndarray, int]
ShapeFn = Callable[[np.random.Generator], list[Layer]]
PatternFn = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]

_MIN_SIDE, _MAX_SIDE = 120, 480
_MIN_ASPECT, _MAX_ASPECT = 0.6, 1.7
_SUPERSAMPLE = 2  # shape masks are drawn at this factor and downsampled (anti-aliasing)


# --------------------------------------------------------------------------- geometry


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``(N, 2)`` points about the origin.

    Args:
        points: Array of ``(x, y)`` vertices.
        angle: Rotation angle in radians.

    Returns:
        The rotated ``(N, 2)`` array.
    """
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _regular_polygon(sides: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    """Vertices of a regular polygon centred on the origin.

    Args:
        sides: Number of vertices.
        radius: Circumradius.
        phase: Angle of the first vertex in radians.

    Returns:
        A ``(sides, 2)`` array.
    """
    t = phase + np.arange(sides) * (2.0 * math.pi / sides)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _circle(radius: float = 1.0, center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A circle approximated by a 96-gon."""
    return _regular_polygon(96, radius) + np.asarray(center)


def _star_polygon(tips: int, inner: float) -> np.ndarray:
    """A star with ``tips`` outer points and inner radius ``inner`` (outer radius 1)."""
    radii = np.where(np.arange(2 * tips) % 2 == 0, 1.0, inner)
    t = -math.pi / 2 + np.arange(2 * tips) * (math.pi / tips)
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


def _centered(points: np.ndarray) -> np.ndarray:
    """Shift points so their bounding box is centred on the origin."""
    return points - (points.min(axis=0) + points.max(axis=0)) / 2.0


# --------------------------------------------------------------------------- shapes


def _shape_circle(rng: np.random.Generator) -> list[Layer]:
    return [(_circle(), 255)]


def _shape_square(rng: np.random.Generator) -> list[Layer]:
    return [(_regular_polygon(4, phase=math.pi / 4), 255)]


def _shape_triangle(rng: np.random.Generator) -> list[Layer]:
    return [(_centered(_regular_polygon(3, phase=-math.pi / 2)), 255)]


def _shape_star(rng: np.random.Generator) -> list[Layer]:
    return [(_star_polygon(5, rng.uniform(0.38, 0.5)), 255)]


def _shape_cross(rng: np.random.Generator) -> list[Layer]:
    a = rng.uniform(0.22, 0.34)  # half width of each arm
    pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a),
           (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]  # fmt: skip
    return [(np.array(pts, dtype=float), 255)]


def _shape_ring(rng: np.random.Generator) -> list[Layer]:
    return [(_circle(), 255), (_circle(rng.uniform(0.5, 0.68)), 0)]


def _shape_hexagon(rng: np.random.Generator) -> list[Layer]:
    return [(_regular_polygon(6), 255)]


def _shape_diamond(rng: np.random.Generator) -> list[Layer]:
    w = rng.uniform(0.45, 0.6)
    return [(np.array([(0, -1), (w, 0), (0, 1), (-w, 0)], dtype=float), 255)]


def _shape_crescent(rng: np.random.Generator) -> list[Layer]:
    shift = rng.uniform(0.4, 0.6)
    return [(_circle(), 255), (_circle(0.9, (shift, -0.1)), 0)]


def _shape_arrow(rng: np.random.Generator) -> list[Layer]:
    s = rng.uniform(0.14, 0.22)  # half width of the shaft
    h = rng.uniform(0.5, 0.65)  # half width of the head
    neck = rng.uniform(0.05, 0.25)  # x where the head starts
    pts = [(-1, -s), (neck, -s), (neck, -h), (1, 0), (neck, h), (neck, s), (-1, s)]
    return [(np.array(pts, dtype=float), 255)]


def _shape_heart(rng: np.random.Generator) -> list[Layer]:
    t = np.linspace(0.0, 2.0 * math.pi, 120, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = _centered(np.stack([x, y], axis=1))
    return [(pts / np.abs(pts).max(), 255)]


def _shape_semicircle(rng: np.random.Generator) -> list[Layer]:
    t = np.linspace(math.pi, 2.0 * math.pi, 64)
    pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    return [(_centered(pts), 255)]


def _shape_lshape(rng: np.random.Generator) -> list[Layer]:
    k = -1 + 2 * rng.uniform(0.28, 0.4)  # inner corner coordinate (arm thickness)
    pts = [(-1, -1), (k, -1), (k, -k), (1, -k), (1, 1), (-1, 1)]
    return [(np.array(pts, dtype=float), 255)]


def _shape_lightning(rng: np.random.Generator) -> list[Layer]:
    pts = [(0.15, -1.0), (-0.55, 0.12), (-0.05, 0.12), (-0.3, 1.0),
           (0.55, -0.2), (0.05, -0.2), (0.35, -1.0)]  # fmt: skip
    return [(_centered(np.array(pts, dtype=float)), 255)]


def _shape_frame(rng: np.random.Generator) -> list[Layer]:
    inner = rng.uniform(0.55, 0.72)
    outer = _regular_polygon(4, phase=math.pi / 4)
    return [(outer, 255), (outer * inner, 0)]


_SHAPES: dict[str, ShapeFn] = {
    "circle": _shape_circle,
    "square": _shape_square,
    "triangle": _shape_triangle,
    "star": _shape_star,
    "cross": _shape_cross,
    "ring": _shape_ring,
    "hexagon": _shape_hexagon,
    "diamond": _shape_diamond,
    "crescent": _shape_crescent,
    "arrow": _shape_arrow,
    "heart": _shape_heart,
    "semicircle": _shape_semicircle,
    "lshape": _shape_lshape,
    "lightning": _shape_lightning,
    "frame": _shape_frame,
}


# --------------------------------------------------------------------------- patterns
# Each pattern maps rotated patch coordinates (u, v), centred near the patch centre,
# and a period p (pixels) to a boolean "ink" mask.


def _pat_stripes(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return np.mod(u, p) < p * rng.uniform(0.35, 0.55)


def _pat_checkerboard(
    u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator
) -> np.ndarray:
    return (np.floor(u / p) + np.floor(v / p)) % 2 == 0


def _pat_dots(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    du, dv = np.mod(u, p) - p / 2, np.mod(v, p) - p / 2
    return du**2 + dv**2 < (p * rng.uniform(0.22, 0.34)) ** 2


def _pat_zigzag(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    tooth = np.abs(np.mod(u / p, 1.0) - 0.5) * 2.0  # triangle wave in [0, 1]
    return np.mod(v + rng.uniform(0.6, 1.0) * p * tooth, p) < p * rng.uniform(0.3, 0.45)


def _pat_grid(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    t = p * rng.uniform(0.12, 0.22)
    return (np.mod(u, p) < t) | (np.mod(v, p) < t)


def _pat_spiral(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    return np.mod(r - p * theta / (2.0 * math.pi), p) < p * rng.uniform(0.35, 0.5)


def _pat_concentric(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return np.mod(np.hypot(u, v), p) < p * rng.uniform(0.35, 0.5)


def _pat_waves(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    wave = rng.uniform(0.3, 0.5) * p * np.sin(2.0 * math.pi * u / (p * rng.uniform(1.5, 2.5)))
    return np.mod(v + wave, p) < p * rng.uniform(0.3, 0.45)


def _pat_bricks(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    t = p * rng.uniform(0.12, 0.2)  # mortar thickness
    row = np.floor(v / p)
    shifted = u + np.mod(row, 2) * p  # brick length is 2p, odd rows offset by half a brick
    return (np.mod(v, p) < t) | (np.mod(shifted, 2.0 * p) < t)


def _pat_rays(u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    rays = int(rng.integers(8, 17))
    return np.mod(np.arctan2(v, u) * rays / (2.0 * math.pi), 1.0) < 0.5


_PATTERNS: dict[str, PatternFn] = {
    "stripes": _pat_stripes,
    "checkerboard": _pat_checkerboard,
    "dots": _pat_dots,
    "zigzag": _pat_zigzag,
    "grid": _pat_grid,
    "spiral": _pat_spiral,
    "concentric": _pat_concentric,
    "waves": _pat_waves,
    "bricks": _pat_bricks,
    "rays": _pat_rays,
}

SHAPE_NAMES: tuple[str, ...] = tuple(_SHAPES)
PATTERN_NAMES: tuple[str, ...] = tuple(_PATTERNS)

# Shapes and patterns are interleaved so that a small ``classes=`` prefix mixes both kinds.
CLASS_NAMES: tuple[str, ...] = (
    "circle", "stripes", "triangle", "checkerboard", "star", "dots",
    "square", "concentric", "cross", "zigzag", "ring", "grid",
    "arrow", "spiral", "heart", "waves", "crescent", "bricks",
    "hexagon", "rays", "diamond", "lightning", "semicircle", "lshape", "frame",
)  # fmt: skip


# --------------------------------------------------------------------------- colours


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of ``(..., 3)`` RGB values."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random RGB colour as a float array."""
    return rng.integers(0, 256, size=3).astype(np.float32)


def _contrasting_color(rng: np.random.Generator, background_luma: float) -> tuple[int, ...]:
    """A random colour whose luma differs from ``background_luma`` by at least 90.

    Args:
        rng: Random generator.
        background_luma: Mean luma of the background (0-255).

    Returns:
        An ``(r, g, b)`` tuple.
    """
    for _ in range(32):
        color = _random_color(rng)
        if abs(_luma(color) - background_luma) >= 90:
            return tuple(int(c) for c in color)
    return (0, 0, 0) if background_luma > 127 else (255, 255, 255)


# --------------------------------------------------------------------------- backgrounds


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A solid, gradient or smooth-noise background as a float ``(H, W, 3)`` array."""
    base = _random_color(rng)
    kind = rng.choice(["solid", "gradient", "noise"])
    if kind == "solid":
        return np.broadcast_to(base, (height, width, 3)).copy()
    other = np.clip(base + rng.uniform(-70, 70, size=3), 0, 255).astype(np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        xs = np.arange(width, dtype=np.float32) * math.cos(angle)
        ys = np.arange(height, dtype=np.float32) * math.sin(angle)
        proj = ys[:, None] + xs[None, :]
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        return base + t[..., None] * (other - base)
    cells = int(rng.integers(3, 12))
    coarse = base + rng.uniform(-1, 1, size=(cells, cells, 3)) * np.abs(other - base + 1)
    small = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB")
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def _add_clutter(image: Image.Image, rng: np.random.Generator) -> None:
    """Draw a few thin random lines and small blobs in random colours, in place."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    short = min(width, height)
    for _ in range(int(rng.integers(2, 7))):
        color = tuple(int(c) for c in _random_color(rng))
        if rng.random() < 0.5:
            x0, x1 = rng.uniform(0, width, size=2)
            y0, y1 = rng.uniform(0, height, size=2)
            draw.line([(x0, y0), (x1, y1)], fill=color, width=int(rng.integers(1, 4)))
        else:
            r = short * rng.uniform(0.015, 0.04)
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            draw.ellipse([cx - r, cy - r * rng.uniform(0.6, 1.4), cx + r, cy + r], fill=color)


# --------------------------------------------------------------------------- foreground


def _shape_mask(name: str, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Anti-aliased ``L`` mask of one randomly scaled, rotated and placed shape."""
    short = min(width, height)
    radius = short * rng.uniform(0.35, 0.8) / 2.0
    stretch = rng.uniform(0.85, 1.15, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    margin = 0.8 * radius  # keeps the object fully or mostly inside the frame
    cx = rng.uniform(margin, width - margin) if width > 2 * margin else width / 2
    cy = rng.uniform(margin, height - margin) if height > 2 * margin else height / 2

    ss = _SUPERSAMPLE
    mask = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(mask)
    for points, value in _SHAPES[name](rng):
        pts = _rotate(points * stretch * radius, angle) + (cx, cy)
        draw.polygon([tuple(p) for p in (pts * ss).tolist()], fill=value)
    return mask.resize((width, height), Image.Resampling.BOX)


def _pattern_mask(name: str, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """``L`` mask of a pattern filling a random large rectangular or elliptic patch."""
    pw = max(8, int(width * rng.uniform(0.55, 0.95)))
    ph = max(8, int(height * rng.uniform(0.55, 0.95)))
    x0, y0 = int(rng.integers(0, width - pw + 1)), int(rng.integers(0, height - ph + 1))
    period = min(pw, ph) / rng.uniform(4.0, 9.0)
    angle = rng.uniform(0, 2 * math.pi)

    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float64)
    # The pattern origin (centre of spirals, rings and rays) stays near the patch centre.
    xx -= pw / 2 + rng.uniform(-0.15, 0.15) * pw
    yy -= ph / 2 + rng.uniform(-0.15, 0.15) * ph
    c, s = math.cos(angle), math.sin(angle)
    u, v = xx * c + yy * s, -xx * s + yy * c
    ink = _PATTERNS[name](u, v, period, rng)

    if rng.random() < 0.4:  # elliptic patch
        ex = (np.arange(pw) - (pw - 1) / 2) / (pw / 2)
        ey = (np.arange(ph) - (ph - 1) / 2) / (ph / 2)
        ink &= ex[None, :] ** 2 + ey[:, None] ** 2 <= 1.0

    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0 : y0 + ph, x0 : x0 + pw] = ink.astype(np.uint8) * 255
    return Image.fromarray(mask, "L")


def _postprocess(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sometimes apply a mild Gaussian blur and/or mild pixel noise."""
    if rng.random() < 0.25:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    if rng.random() < 0.25:
        pixels = np.asarray(image, dtype=np.float32)
        noise = rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(2.0, 8.0)
        pixels = pixels + noise
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    """Random ``(width, height)`` with both sides in [120, 480] and aspect in [0.6, 1.7]."""
    aspect = math.exp(rng.uniform(math.log(_MIN_ASPECT), math.log(_MAX_ASPECT)))
    lo = max(_MIN_SIDE, _MIN_SIDE * aspect)  # width range keeping the height in bounds too
    hi = min(_MAX_SIDE, _MAX_SIDE * aspect)
    width = int(rng.uniform(lo, hi))
    height = int(np.clip(round(width / aspect), _MIN_SIDE, _MAX_SIDE))
    return width, height


def draw_image(name: str, rng: np.random.Generator) -> Image.Image:
    """Draw one random RGB image of class ``name``.

    Args:
        name: A class name from :data:`CLASS_NAMES`.
        rng: Random generator; the image is a pure function of its state.

    Returns:
        An ``RGB`` PIL image.

    Raises:
        KeyError: If ``name`` is not a known class.
    """
    if name not in _SHAPES and name not in _PATTERNS:
        raise KeyError(f"unknown class {name!r}; expected one of {CLASS_NAMES}")
    width, height = _random_size(rng)
    pixels = _background(rng, width, height)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    _add_clutter(image, rng)
    color = _contrasting_color(rng, float(_luma(pixels).mean()))
    if name in _SHAPES:
        mask = _shape_mask(name, rng, width, height)
    else:
        mask = _pattern_mask(name, rng, width, height)
    image = Image.composite(Image.new("RGB", image.size, color), image, mask)
    return _postprocess(image, rng)


# --------------------------------------------------------------------------- encoding / io


def _encode(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """Encode as JPEG (about half) or PNG, occasionally in L, RGBA or P mode.

    Returns:
        The encoded bytes and the file extension (``".jpg"`` or ``".png"``).
    """
    buf = io.BytesIO()
    if rng.random() < 0.5:
        if rng.random() < 0.05:
            image = image.convert("L")
        image.save(buf, format="JPEG", quality=int(rng.integers(75, 96)))
        return buf.getvalue(), ".jpg"
    mode = rng.choice(["RGB", "L", "RGBA", "P"], p=[0.82, 0.07, 0.07, 0.04])
    if mode == "RGBA":
        image = image.convert("RGBA")  # fully opaque alpha channel
    elif mode == "L":
        image = image.convert("L")
    elif mode == "P":
        image = image.quantize(colors=256)
    image.save(buf, format="PNG", compress_level=1)  # fast; still lossless
    return buf.getvalue(), ".png"


def _check_args(classes: int, per_class: int, seed: int, val_fraction: float) -> None:
    """Raise ``ValueError`` for arguments :func:`generate` cannot honour."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be between 2 and {len(CLASS_NAMES)}, got {classes}")
    if per_class < 2:
        raise ValueError(f"per_class must be at least 2 (one train, one val), got {per_class}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def _check_empty(root: Path) -> None:
    """Raise ``FileExistsError`` if ``root/train`` or ``root/val`` exists and is non-empty."""
    for split in ("train", "val"):
        target = root / split
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise FileExistsError(
                f"{target} already exists and is not empty; refusing to overwrite it "
                "(choose another output folder or remove it first)"
            )


def _val_count(per_class: int, val_fraction: float) -> int:
    """Number of validation images per class: rounded, at least 1, leaving at least 1 train."""
    return min(per_class - 1, max(1, round(per_class * val_fraction)))


def generate(
    out: str | Path,
    *,
    classes: int,
    per_class: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    progress: bool = True,
) -> dict:
    """Write a synthetic, labelled image set to ``out/train`` and ``out/val``.

    The first ``classes`` names of :data:`CLASS_NAMES` are used. For each, images
    ``0 .. per_class-1`` are drawn; the last ``round(per_class * val_fraction)`` of
    them (at least 1) go to ``val/``, the rest to ``train/``. Image ``i`` of class
    ``c`` depends only on ``(seed, c, i)``, so output is byte-identical across runs.

    Args:
        out: Output root folder (created if missing).
        classes: Number of classes, 2 to ``len(CLASS_NAMES)``.
        per_class: Images per class (train + val), at least 2.
        seed: Non-negative base seed.
        val_fraction: Fraction of each class put in ``val/``, strictly in (0, 1).
        progress: Show a tqdm progress bar.

    Returns:
        ``{"root": str, "classes": int, "class_names": list[str], "train": int,
        "val": int}`` where ``train`` and ``val`` are total image counts.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``out/train`` or ``out/val`` exists and is non-empty.
    """
    _check_args(classes, per_class, seed, val_fraction)
    root = Path(out)
    _check_empty(root)
    names = CLASS_NAMES[:classes]
    n_val = _val_count(per_class, val_fraction)
    counts = {"train": 0, "val": 0}
    with tqdm(total=classes * per_class, disable=not progress, unit="img", desc="synth") as bar:
        for class_index, name in enumerate(names):
            for split in ("train", "val"):
                (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                rng = np.random.default_rng([seed, class_index, index])
                data, ext = _encode(draw_image(name, rng), rng)
                split = "val" if index >= per_class - n_val else "train"
                write_atomic(root / split / name / f"{name}_{index:05d}{ext}", data)
                counts[split] += 1
                bar.update(1)
    return {"root": str(root), "classes": classes, "class_names": list(names), **counts}
