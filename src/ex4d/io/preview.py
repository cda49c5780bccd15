"""Side-by-side preview videos with a caption above each panel (no font library needed)."""

from __future__ import annotations

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
