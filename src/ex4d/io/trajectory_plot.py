"""A picture of a camera path over the scene's point cloud: a top view (x–z) and a side view (y–z).

Drawn with numpy alone (no matplotlib) and saved as PNG with a small zlib writer, so it costs no dependency.
World = the source camera, OpenCV axes (x right, y down, z forward; ``docs/conventions.md``). The top view looks
down on the scene: x to the right, z (forward) up the image. The side view looks from the right: z to the right,
y down the image (the scene stays upright). Both views share one scale (equal aspect), so distances compare.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ex4d.io.atomic import atomic_path
from ex4d.io.preview import text_mask

BACKGROUND = (24, 24, 24)
PATH_COLOR = (255, 210, 40)
CAMERA_COLOR = (80, 200, 255)
FIRST_CAMERA_COLOR = (255, 70, 70)


@dataclass(frozen=True)
class View:
    """One panel: world axis ``horizontal`` to the right, world axis ``vertical`` up (``up=True``) or down."""

    name: str
    horizontal: int
    vertical: int
    up: bool


TOP = View("TOP  X-Z", horizontal=0, vertical=2, up=True)
SIDE = View("SIDE  Z-Y", horizontal=2, vertical=1, up=False)


def scene_bounds(points: np.ndarray, centers: np.ndarray, percentile: float = 2.0) -> np.ndarray:
    """(3, 2) min/max per axis covering the camera centres and the bulk of the points (outliers cut)."""
    parts = [centers]
    if len(points):
        parts += [np.percentile(points, [percentile, 100 - percentile], axis=0)]
    both = np.concatenate(parts, 0)
    lo, hi = both.min(0), both.max(0)
    pad = 0.05 * max(float((hi - lo).max()), 1e-6)
    return np.stack([lo - pad, hi + pad], 1)


def to_panel(xyz: np.ndarray, view: View, bounds: np.ndarray, size: int, margin: int) -> np.ndarray:
    """World points (N, 3) -> continuous panel coordinates (N, 2) as (u, v) = (column, row).

    The scale is ``(size - 2·margin) / s`` px per unit with s the larger of the two axes' extents (equal aspect),
    and the centre of ``bounds`` lands at the panel centre ``size / 2``.
    """
    a, b = view.horizontal, view.vertical
    extent = max(bounds[a, 1] - bounds[a, 0], bounds[b, 1] - bounds[b, 0], 1e-9)
    scale = (size - 2 * margin) / extent
    mid_a, mid_b = bounds[a].mean(), bounds[b].mean()
    u = size / 2 + (xyz[:, a] - mid_a) * scale
    v = size / 2 + (xyz[:, b] - mid_b) * scale * (-1 if view.up else 1)
    return np.stack([u, v], 1)


def _put(img: np.ndarray, uv: np.ndarray, color) -> None:
    """Set the pixels containing the (N, 2) points ``uv`` (those inside the image) to ``color``."""
    iu, iv = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (iu >= 0) & (iu < img.shape[1]) & (iv >= 0) & (iv < img.shape[0])
    img[iv[ok], iu[ok]] = color if not isinstance(color, np.ndarray) else color[ok]


def draw_line(img: np.ndarray, p0, p1, color, width: int = 1) -> None:
    """Rasterise the segment p0 -> p1 (panel coordinates) by dense sampling; ``width`` px thick."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    n = int(np.ceil(np.abs(p1 - p0).max() * 2)) + 2
    pts = p0 + (p1 - p0) * np.linspace(0, 1, n)[:, None]
    for du in range(width):
        for dv in range(width):
            _put(img, pts + np.array([du - (width - 1) / 2, dv - (width - 1) / 2]), color)


def draw_disk(img: np.ndarray, center, radius: float, color) -> None:
    """Fill the pixels whose centres are within ``radius`` of ``center``."""
    u0, v0 = center
    r = int(np.ceil(radius)) + 1
    vv, uu = np.mgrid[int(v0) - r:int(v0) + r + 1, int(u0) - r:int(u0) + r + 1]
    inside = (uu + 0.5 - u0) ** 2 + (vv + 0.5 - v0) ** 2 <= radius ** 2
    _put(img, np.stack([uu[inside] + 0.5, vv[inside] + 0.5], 1), color)


def frustum_lines(c2w: np.ndarray, length: float, aspect: float = 0.75, half_fov: float = 0.45) -> np.ndarray:
    """World segments (8, 2, 3) of a small camera pyramid: apex at the centre, base ``length`` ahead (+z)."""
    w = length * np.tan(half_fov)
    corners_cam = np.array([[-w, -w * aspect, length], [w, -w * aspect, length], [w, w * aspect, length],
                            [-w, w * aspect, length]])
    corners = corners_cam @ c2w[:3, :3].T + c2w[:3, 3]
    apex = c2w[:3, 3]
    return np.array([[apex, c] for c in corners] + [[corners[i], corners[(i + 1) % 4]] for i in range(4)])


def render_panel(view: View, w2c: np.ndarray, points: np.ndarray, colors: np.ndarray | None, bounds: np.ndarray,
                 size: int = 360, margin: int = 16, max_frusta: int = 12) -> np.ndarray:
    """One view of the scene and the cameras: (size, size, 3) uint8.

    Args:
        w2c: (T, 4, 4) world-to-camera matrices.
        points: (N, 3) world points; ``colors``: (N, 3) uint8 or None (grey).
        bounds: (3, 2) world box mapped into the panel (see :func:`to_panel`).
        max_frusta: cameras drawn as pyramids (evenly spread; frame 0 always, in red with a dot).
    """
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUND
    if len(points):
        # Dimmed, so the path stays readable on top of a bright scene.
        shade = (np.full((len(points), 3), 150, np.uint8) if colors is None
                 else (colors.astype(np.float32) * 0.7 + 20).astype(np.uint8))
        uv = to_panel(points, view, bounds, size, margin)
        for offset in ((0, 0), (1, 0), (0, 1), (1, 1)):  # 2×2 px dots: a thin wall seen edge-on stays visible
            _put(img, uv + offset, shade)
    c2w = np.linalg.inv(w2c)
    centers = to_panel(c2w[:, :3, 3], view, bounds, size, margin)
    for p0, p1 in zip(centers[:-1], centers[1:]):
        draw_line(img, p0, p1, PATH_COLOR, width=2)
    length = 0.06 * float((bounds[:, 1] - bounds[:, 0]).max())
    picks = np.unique(np.linspace(0, len(w2c) - 1, min(max_frusta, len(w2c))).round().astype(int))
    for t in picks[::-1]:  # frame 0 drawn last, on top
        color = FIRST_CAMERA_COLOR if t == 0 else CAMERA_COLOR
        for a, b in frustum_lines(c2w[t], length * (1.5 if t == 0 else 1.0)):
            draw_line(img, *to_panel(np.stack([a, b]), view, bounds, size, margin), color)
    draw_disk(img, centers[0], 4.0, FIRST_CAMERA_COLOR)
    return img


def trajectory_image(w2c: np.ndarray, points: np.ndarray, colors: np.ndarray | None = None, size: int = 360,
                     bounds: np.ndarray | None = None, title: str = "") -> np.ndarray:
    """The top and side panels next to each other under captions: (H, 2·size + gap, 3) uint8.

    Args:
        w2c: (T, 4, 4) OpenCV world-to-camera matrices (frame 0 is marked in red).
        points: (N, 3) world points, e.g. frame 0's depth unprojected; ``colors`` (N, 3) uint8.
        bounds: (3, 2) box to show; default: :func:`scene_bounds`.
        title: text above the panels (letters, digits, - + . : _ /).
    """
    w2c = np.asarray(w2c, np.float64)
    points = np.asarray(points, np.float64).reshape(-1, 3)
    finite = np.isfinite(points).all(1)
    points, colors = points[finite], None if colors is None else np.asarray(colors).reshape(-1, 3)[finite]
    if bounds is None:
        bounds = scene_bounds(points, np.linalg.inv(w2c)[:, :3, 3])
    gap, caption_h = 8, 24
    panels = [render_panel(v, w2c, points, colors, bounds, size) for v in (TOP, SIDE)]
    out = np.empty((caption_h * (2 if title else 1) + size, 2 * size + gap, 3), np.uint8)
    out[:] = BACKGROUND
    y = 0
    if title:
        _caption(out, title, 0, 0, out.shape[1])
        y = caption_h
    for i, (view, panel) in enumerate(zip((TOP, SIDE), panels)):
        x = i * (size + gap)
        _caption(out, view.name, y, x, size)
        out[y + caption_h:, x:x + size] = panel
    return out


def panel_origin(index: int, size: int = 360, title: bool = False) -> tuple[int, int]:
    """(row, column) of panel ``index`` (0 = top view, 1 = side view) inside :func:`trajectory_image`."""
    return 24 * (2 if title else 1), index * (size + 8)


def _caption(img: np.ndarray, text: str, y: int, x: int, width: int) -> None:
    ink = text_mask(text, 2)[:, :width]
    x0 = x + max(0, (width - ink.shape[1]) // 2)
    img[y + 5:y + 5 + ink.shape[0], x0:x0 + ink.shape[1]][ink] = 235


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes (8-bit truecolour, no filtering, zlib level 6)."""
    image = np.ascontiguousarray(image, np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape}")
    h, w = image.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], 1)  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, colour type 2 (RGB)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write ``image`` (H, W, 3) uint8 as PNG, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_png(image))
    return Path(path)


def save_trajectory_plot(path: str | os.PathLike, w2c: np.ndarray, points: np.ndarray,
                         colors: np.ndarray | None = None, title: str = "", max_points: int = 60000) -> Path:
    """Draw :func:`trajectory_image` (with at most ``max_points`` points, evenly subsampled) into a PNG."""
    points = np.asarray(points).reshape(-1, 3)
    step = max(1, len(points) // max_points)
    colors = None if colors is None else np.asarray(colors).reshape(-1, 3)[::step]
    return save_png(path, trajectory_image(w2c, points[::step], colors, title=title))
