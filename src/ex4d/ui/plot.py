"""A dependency-free picture of the camera path: frame 0's points and the cameras seen from above.

Top view: image right = world x (right), image up = world z (away from the source camera). Points keep their
colours; the path is a line from green (first frame) to red (last frame) with a short tick along each sampled
camera's viewing direction; the source camera is the white dot.
"""

from __future__ import annotations

import numpy as np


def _line(img: np.ndarray, p0, p1, color) -> None:
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    xs = np.linspace(p0[0], p1[0], n).round().astype(int)
    ys = np.linspace(p0[1], p1[1], n).round().astype(int)
    ok = (xs >= 0) & (xs < img.shape[1]) & (ys >= 0) & (ys < img.shape[0])
    img[ys[ok], xs[ok]] = color


def _dot(img: np.ndarray, p, color, r: int = 3) -> None:
    x, y = int(round(p[0])), int(round(p[1]))
    img[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = color


def top_view(frame: np.ndarray, depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, size: int = 360,
             max_points: int = 20000) -> np.ndarray:
    """Draw the scene's frame-0 points and the camera centres from above.

    Args:
        frame: (H, W, 3) uint8 source frame 0.
        depth: (H, W) z-depth of frame 0.
        K: (3, 3) source intrinsics.
        w2c: (T, 4, 4) the path's world-to-camera matrices.

    Returns:
        (size, size, 3) uint8 image.
    """
    H, W = depth.shape
    step = max(1, int(np.ceil(np.sqrt(H * W / max_points))))
    v, u = np.mgrid[0:H:step, 0:W:step]
    z = depth[::step, ::step].astype(np.float64)
    x = (u + 0.5 - K[0, 2]) / K[0, 0] * z
    colors = frame[::step, ::step].reshape(-1, 3)
    # The far wall (missed rays are set very far) would squash the view: keep the nearest 98 % of depths.
    keep = (z <= np.quantile(z, 0.98)).reshape(-1)
    pts = np.stack([x.reshape(-1), z.reshape(-1)], -1)[keep]
    colors = colors[keep]
    c2w = np.linalg.inv(w2c)
    centres = c2w[:, [0, 2], 3]
    forward = c2w[:, [0, 2], 2]
    everything = np.concatenate([pts, centres], 0)
    lo, hi = everything.min(0), everything.max(0)
    span = max(float((hi - lo).max()), 1e-6) * 1.1
    mid = (lo + hi) / 2

    def to_px(p):
        q = (np.asarray(p) - mid) / span + 0.5
        return np.stack([q[..., 0] * (size - 1), (1 - q[..., 1]) * (size - 1)], -1)

    img = np.full((size, size, 3), 32, np.uint8)
    px = to_px(pts).round().astype(int)
    ok = (px[:, 0] >= 0) & (px[:, 0] < size) & (px[:, 1] >= 0) & (px[:, 1] < size)
    img[px[ok, 1], px[ok, 0]] = colors[ok]
    cam_px = to_px(centres)
    T = len(centres)
    shade = lambda i: (int(255 * i / max(T - 1, 1)), int(255 * (1 - i / max(T - 1, 1))), 60)  # noqa: E731
    for i in range(T - 1):
        _line(img, cam_px[i], cam_px[i + 1], shade(i))
    tick = 0.08 * span
    for i in np.unique(np.linspace(0, T - 1, min(T, 9)).round().astype(int)):
        _line(img, cam_px[i], to_px(centres[i] + tick * forward[i] / max(np.linalg.norm(forward[i]), 1e-9)),
              (255, 255, 0))
        _dot(img, cam_px[i], shade(i), 2)
    _dot(img, cam_px[0], (255, 255, 255), 3)
    return img
