"""Previews people look at: side-by-side videos with captions (no font library needed) and small GIFs."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

# 5×7 bitmap glyphs, one string of 7 rows × 5 columns per character ('#' = ink).
_GLYPHS = {
    "A": " ### #   ##   #######   ##   ##   #", "B": "#### #   ##   ##### #   ##   ##### ",
    "C": " ### #   ##    #    #    #   # ### ", "D": "#### #   ##   ##   ##   ##   ##### ",
    "E": "######    #    #### #    #    #####", "F": "######    #    #### #    #    #    ",
    "G": " ### #   ##    # ####   ##   # ####", "H": "#   ##   ##   #######   ##   ##   #",
    "I": " ###   #    #    #    #    #   ### ", "K": "#   ##  # # #  ##   # #  #  # #   #",
    "L": "#    #    #    #    #    #    #####", "M": "#   ### ### # ##   ##   ##   ##   #",
    "N": "#   ###  ## # ##  ###   ##   ##   #", "O": " ### #   ##   ##   ##   ##   # ### ",
    "P": "#### #   ##   ##### #    #    #    ", "R": "#### #   ##   ##### # #  #  # #   #",
    "S": " #####    #     ###     #    ##### ", "T": "#####  #    #    #    #    #    #  ",
    "U": "#   ##   ##   ##   ##   ##   # ### ", "V": "#   ##   ##   ##   ##   # # #   #  ",
    "W": "#   ##   ##   ## # ## # ## # # # # ", "X": "#   ##   # # #   #   # # #   ##   #",
    "Y": "#   ##   # # #   #    #    #    #  ", "0": " ### #   ##  ### # ###  ##   # ### ",
    "1": "  #   ##    #    #    #    #   ### ", "2": " ### #   #    #   #   #   #   #####",
    "3": "#####   #   #     #     ##   # ### ", "4": "   #   ##  # # #  ######   #    #  ",
    "5": "######    ####     #    ##   # ### ", "6": "  ##  #   #    #### #   ##   # ### ",
    "7": "#####    #   #   #   #    #    #   ", "8": " ### #   ##   # ### #   ##   # ### ",
    "9": " ### #   ##   # ####    #   #  ##  ", "-": "          #####                    ",
    "+": "       #    #  #####  #    #       ", "°": " ##  #  # ##                       ",
    "±": "  #    #  #####  #    #      ##### ", " ": " " * 35, ".": " " * 30 + "  #  ",
    "_": " " * 30 + "#####", ":": "       #              #            ",
    "Z": "#####    #   #   #   #   #    #####", "J": "  ###   #    #    #    # #  #  ##  ",
    "Q": " ### #   ##   ##   ## # ##  #  ## #", "/": "    #    #   #   #   #   #    #    ",
}


def _glyph(ch: str) -> np.ndarray:
    rows = (_GLYPHS.get(ch.upper()) or _GLYPHS[" "]).ljust(35)[:35]
    return np.array([c == "#" for c in rows], bool).reshape(7, 5)


def text_mask(text: str, scale: int = 2) -> np.ndarray:
    """Rasterise ``text`` with the built-in 5×7 font. Returns (7·scale, 6·len·scale) bool."""
    glyphs = [np.pad(_glyph(ch), ((0, 0), (0, 1))) for ch in text] or [np.zeros((7, 6), bool)]
    return np.kron(np.concatenate(glyphs, axis=1), np.ones((scale, scale), bool)).astype(bool)


def side_by_side(panels: list[np.ndarray], labels: list[str], gap: int = 4) -> np.ndarray:
    """Place videos next to each other, each under a caption.

    Args:
        panels: videos (T, H, W, 3) uint8 or (T, H, W) bool/uint8 (masks are shown white = seen), same T and H.
        labels: one caption per panel (letters, digits and - + ° ± . _ :).
        gap: pixels between panels.

    Returns:
        (T, H', W', 3) uint8 with even H' and W' (H.264 yuv420p needs them).
    """
    if len(panels) != len(labels) or not panels:
        raise ValueError("need one label per panel and at least one panel")
    videos = []
    for p in panels:
        p = np.asarray(p)
        if p.dtype == bool:
            p = p.astype(np.uint8) * 255
        videos.append(np.repeat(p[..., None], 3, -1) if p.ndim == 3 else p)
    T, H = videos[0].shape[:2]
    if any(v.shape[:2] != (T, H) for v in videos):
        raise ValueError("all panels need the same frame count and height")
    scale = max(1, H // 128)
    caption_h = 7 * scale + 4 * scale
    width = sum(v.shape[2] for v in videos) + gap * (len(videos) - 1)
    out = np.full((T, caption_h + H + (caption_h + H) % 2, width + width % 2, 3), 24, np.uint8)
    x = 0
    for video, label in zip(videos, labels):
        w = video.shape[2]
        out[:, caption_h:caption_h + H, x:x + w] = video
        ink = text_mask(label, scale)[:, :w]
        y0, x0 = 2 * scale, x + max(0, (w - ink.shape[1]) // 2)
        out[:, y0:y0 + ink.shape[0], x0:x0 + ink.shape[1]][:, ink] = 235
        x += w + gap
    return out


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Stack (T, H_i, W_i, 3) uint8 videos top to bottom, padding narrower rows on the right (grey 24)."""
    width = max(r.shape[2] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, 0), (0, width - r.shape[2]), (0, 0)), constant_values=24)
                           for r in rows], axis=1)


def _downscale(frames: np.ndarray, max_width: int) -> np.ndarray:
    """Area-style (antialiased) downscale of (T, H, W, 3) uint8 to width <= max_width, aspect kept."""
    import torch
    import torch.nn.functional as F

    T, H, W, _ = frames.shape
    if W <= max_width:
        return frames
    h, w = max(1, round(H * max_width / W)), max_width
    out = np.empty((T, h, w, 3), np.uint8)
    for start in range(0, T, 16):  # a few frames at a time keeps the float copy small
        x = torch.from_numpy(frames[start:start + 16]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + 16] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def gif_palette(frames: np.ndarray, colors: int = 256, iters: int = 6, seed: int = 0) -> np.ndarray:
    """A palette fitted to the video (k-means on a pixel sample): (colors, 3) uint8.

    GIF frames hold at most 256 colours; a fitted palette looks far better than a fixed 3-3-2 one.
    """
    rng = np.random.default_rng(seed)
    pixels = frames.reshape(-1, 3)
    sample = pixels[rng.choice(len(pixels), min(len(pixels), 8000), replace=False)].astype(np.float32)
    unique = np.unique(sample, axis=0)
    if len(unique) <= colors:  # few colours: use them exactly
        return np.pad(unique, ((0, colors - len(unique)), (0, 0))).astype(np.uint8)
    centers = unique[rng.choice(len(unique), colors, replace=False)]
    for _ in range(iters):
        label = _nearest(sample, centers)
        sums = np.stack([np.bincount(label, sample[:, c], minlength=colors) for c in range(3)], 1)
        counts = np.bincount(label, minlength=colors)[:, None]
        centers = np.where(counts > 0, sums / np.maximum(counts, 1), centers)  # empty clusters stay put
    return np.clip(np.round(centers), 0, 255).astype(np.uint8)


def _nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for each (N, 3) point (squared distances through one matrix product)."""
    d = (centers ** 2).sum(1)[None] - 2.0 * points @ centers.T
    return d.argmin(1)


def quantize(frames: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) palette indices, nearest colour at 5 bits per channel (a 32³ table)."""
    q = np.arange(32, dtype=np.float32) * 8 + 4
    grid = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    table = _nearest(grid, palette.astype(np.float32)).astype(np.uint8)
    f = frames >> 3
    return table[(f[..., 0].astype(np.int32) << 10) | (f[..., 1].astype(np.int32) << 5) | f[..., 2]]


@lru_cache(maxsize=1)
def _palette_layout() -> tuple[int, int, int, int]:
    """Column order (of R, G, B, A) that PyAV's pal8 frames expect; probed once since it is PyAV's internal."""
    import av

    probe = np.array([[10, 20, 30, 255]], np.uint8)
    for order in ((3, 0, 1, 2), (2, 1, 0, 3), (0, 1, 2, 3)):  # ARGB, BGRA, RGBA byte orders
        palette = np.zeros((256, 4), np.uint8)
        palette[0] = probe[0][list(order)]
        frame = av.VideoFrame.from_ndarray((np.zeros((2, 2), np.uint8), palette), format="pal8")
        if frame.to_ndarray(format="rgb24")[0, 0].tolist() == [10, 20, 30]:
            return order
    raise RuntimeError("cannot find the palette layout of this PyAV version")


def save_gif(path: str | os.PathLike, frames: np.ndarray, fps: float, max_width: int = 480,
             max_fps: float = 12.0) -> Path:
    """Write a small looping GIF (PyAV's gif encoder), atomically.

    Args:
        path: destination ``.gif``.
        frames: (T, H, W, 3) uint8 RGB.
        fps: frame rate of ``frames``; frames are dropped (every k-th kept) to stay at or under ``max_fps``.
        max_width: frames wider than this are downscaled (aspect kept).

    Returns:
        The destination path.
    """
    import av

    from ex4d.io.atomic import atomic_path

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    step = max(1, math.ceil(fps / max_fps - 1e-9))
    frames = _downscale(frames[::step], max_width)
    palette = gif_palette(frames)
    rgba = np.concatenate([palette, np.full((len(palette), 1), 255, np.uint8)], 1)
    pal = np.zeros((256, 4), np.uint8)
    pal[:len(rgba)] = rgba[:, list(_palette_layout())]
    indices = quantize(frames, palette)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="gif") as container:
            stream = container.add_stream("gif", rate=Fraction(fps / step).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "pal8"
            for i, index in enumerate(indices):
                frame = av.VideoFrame.from_ndarray((np.ascontiguousarray(index), pal), format="pal8")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return Path(path)


def save_grid_gif(path: str | os.PathLike, panels: list[np.ndarray], labels: list[str], fps: float,
                  columns: int = 2, max_width: int = 480, max_fps: float = 12.0) -> Path:
    """Captioned panels in a grid (``columns`` per row) as a small GIF (see :func:`save_gif`).

    Frames are dropped and panels downscaled before the grid is built, so a long full-size preview costs
    little. ``panels``: videos (T, H, W, 3) uint8 or (T, H, W) bool/uint8 masks of one size.
    """
    step = max(1, math.ceil(fps / max_fps - 1e-9))
    gap = 4
    width = max(2, (max_width - gap * (columns - 1)) // columns)
    small = []
    for p in panels:
        p = np.asarray(p)[::step]
        if p.dtype == bool:
            p = p.astype(np.uint8) * 255
        small.append(_downscale(np.repeat(p[..., None], 3, -1) if p.ndim == 3 else p, width))
    rows = [side_by_side(small[i:i + columns], labels[i:i + columns], gap)
            for i in range(0, len(small), columns)]
    return save_gif(path, stack_rows(rows), fps / step, max_width=max_width, max_fps=max_fps)
