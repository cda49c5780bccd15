"""Simulated masks for training pairs from monocular videos (spec §9.2): rendering masks and tracking masks.

Both are *source-view* masks ``(T, H, W) bool`` with the project's polarity: True = kept (visible in the
conditioning video), False = hidden (the model must generate it). Frame 0 is always all True, as at inference,
where frame 0 is the source frame itself.

* :func:`rendering_mask` — double reprojection: what a novel camera would see of frame t, brought back to the
  source view. It hides exactly the source pixels that the novel view does not see (disocclusions behind
  foreground objects, content leaving the frame), so that ``cond = V ⊙ M`` looks like the inputs the model gets
  at inference, while the target ``V`` is known.
* :func:`tracking_mask` — a hole that moves with the scene: defined on frame 0 and carried along dense optical
  flow (OpenCV's Farnebäck), so that holes stay attached to the content as it moves. The same along point tracks
  (e.g. CoTracker3's, as the reference): :func:`ex4d.train.tracks.tracks_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ex4d.geometry.conventions import invert_rigid
from ex4d.mesh.build import MeshSettings, build_dw_mesh
from ex4d.render.dwmesh import RenderSettings, render_dw_mesh

__all__ = ["FlowSettings", "backward_flow", "propagate_hole", "random_hole", "rendering_mask", "tracking_mask",
           "require_cv2"]

TRAIN_EXTRA_HINT = 'pip install "ex4d[train]"'


def require_cv2():
    """``import cv2`` (OpenCV, the ``train`` extra), with an install hint when it is missing."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(f"tracking masks need OpenCV (opencv-python-headless): {TRAIN_EXTRA_HINT}") from exc
    return cv2


def _batched_K(K, num: int) -> torch.Tensor:
    K = torch.as_tensor(np.asarray(K, np.float32))
    if K.shape == (3, 3):
        K = K.expand(num, 3, 3)
    if tuple(K.shape) != (num, 3, 3):
        raise ValueError(f"intrinsics must be (3, 3) or ({num}, 3, 3), got {tuple(K.shape)}")
    return K


def rendering_mask(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, *, target_K: np.ndarray | None = None,
                   device: str | torch.device = "cpu", batch_size: int = 8,
                   mesh_settings: MeshSettings = MeshSettings(),
                   render_settings: RenderSettings = RenderSettings()) -> np.ndarray:
    """Source-view masks of what the novel cameras see, by double reprojection through DW-Meshes.

    For every frame t:

    1. build frame t's DW-Mesh from its depth (no colour is needed: only alpha, i.e. occluder faces, matters);
    2. render it from the novel camera ``w2c[t]`` -> seen mask and z-depth in the novel camera;
    3. build a DW-Mesh of that render from its depth, in the novel camera's frame, with every pixel the novel
       view does not see (occluder faces, the far wall, nothing hit) made an invisible occluder;
    4. render that mesh back from the source camera (``inv(w2c[t])`` maps the novel frame to the world = source
       camera): a source pixel is kept iff it is seen through this second mesh, i.e. visible from both views.

    Why a second DW-Mesh rather than per-pixel reprojection: the disoccluded region behind a foreground object
    is spanned, in the novel view, by the first mesh's invisible occluder faces, and in the second mesh by
    stretched faces across the novel view's own depth edges; rendered from the source camera they *cover* exactly
    the source pixels that the novel camera cannot see, with no splatting holes. As everywhere in the DW-Mesh,
    the 1-pixel image border and its neighbours are always hidden, and per-vertex alpha hides about one more
    triangle along every hole edge (spec §10.2, items 10–11).

    Frames whose novel camera is the source camera (identity ``w2c`` and equal intrinsics, e.g. frame 0 of every
    preset) are all True, as the reference's frame 0.

    Args:
        depth: (T, H, W) float32 z-depth of the source frames (positive, finite).
        K: (3, 3) or (T, 3, 3) source intrinsics.
        w2c: (T, 4, 4) novel world-to-camera matrices (world = the source camera, OpenCV axes).
        target_K: (3, 3) or (T, 3, 3) novel intrinsics; default ``K``.
        device: where meshes are built and rendered.
        batch_size: frames processed together.
        mesh_settings, render_settings: DW-Mesh and rasteriser options (defaults = the reference DW-Mesh).

    Returns:
        (T, H, W) bool, True = seen from the novel camera (kept), False = hidden.
    """
    depth = np.asarray(depth, np.float32)
    if depth.ndim != 3:
        raise ValueError(f"depth must be (T, H, W), got {depth.shape}")
    T = depth.shape[0]
    w2c = torch.as_tensor(np.asarray(w2c, np.float32))
    if tuple(w2c.shape) != (T, 4, 4):
        raise ValueError(f"w2c must be ({T}, 4, 4), got {tuple(w2c.shape)}")
    sK = _batched_K(K, T)
    tK = sK if target_K is None else _batched_K(target_K, T)
    dev = torch.device(device)
    mask = np.empty(depth.shape, bool)
    for start in range(0, T, batch_size):
        sl = slice(start, min(start + batch_size, T))
        d = torch.from_numpy(depth[sl]).to(dev)
        blank = torch.zeros((*d.shape, 3), dtype=torch.uint8, device=dev)
        mesh = build_dw_mesh(d, blank, sK[sl].to(dev), mesh_settings)
        novel = render_dw_mesh(mesh, w2c[sl].to(dev), tK[sl].to(dev), render_settings)
        # Pixels where nothing was hit get the far wall's depth; they are occluders like every unseen pixel.
        novel_depth = torch.where(novel.depth_z > 0, novel.depth_z,
                                  torch.full_like(novel.depth_z, mesh_settings.border_depth))
        back_mesh = build_dw_mesh(novel_depth, blank, tK[sl].to(dev), mesh_settings)
        back_mesh.colors = back_mesh.colors * novel.seen.reshape(d.shape[0], -1, 1).to(back_mesh.colors)
        back = render_dw_mesh(back_mesh, invert_rigid(w2c[sl]).to(dev), sK[sl].to(dev), render_settings)
        mask[sl] = back.seen.cpu().numpy()
    eye = torch.eye(4)
    for t in range(T):
        if torch.allclose(w2c[t], eye, atol=1e-6) and torch.allclose(tK[t], sK[t]):
            mask[t] = True  # the source view itself hides nothing
    return mask


@dataclass(frozen=True)
class FlowSettings:
    """Parameters of OpenCV's Farnebäck dense optical flow (``cv2.calcOpticalFlowFarneback``)."""

    pyr_scale: float = 0.5
    """Scale between pyramid levels."""
    levels: int = 3
    """Pyramid levels (more = larger motions)."""
    winsize: int = 15
    """Averaging window (larger = smoother, more robust flow)."""
    iterations: int = 3
    """Iterations per pyramid level."""
    poly_n: int = 5
    """Pixel neighbourhood of the polynomial expansion."""
    poly_sigma: float = 1.2
    """Gaussian sigma of the polynomial expansion (1.1 for poly_n 5 ... 1.5 for poly_n 7)."""


def backward_flow(frames: np.ndarray, settings: FlowSettings = FlowSettings()) -> np.ndarray:
    """Dense flow from every frame to the one before it.

    Args:
        frames: (T, H, W, 3) uint8 RGB.

    Returns:
        (T - 1, H, W, 2) float32; ``flow[t - 1][v, u] = (du, dv)`` such that frame t at pixel (u, v) shows what
        frame t - 1 shows at (u + du, v + dv).
    """
    cv2 = require_cv2()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    s = settings
    flows = [cv2.calcOpticalFlowFarneback(gray[t], gray[t - 1], None, s.pyr_scale, s.levels, s.winsize,
                                          s.iterations, s.poly_n, s.poly_sigma, 0) for t in range(1, len(gray))]
    H, W = frames.shape[1:3]
    return np.stack(flows).astype(np.float32) if flows else np.zeros((0, H, W, 2), np.float32)


def propagate_hole(hole: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Carry a frame-0 region along backward flow to every later frame.

    The *coordinates* are chained, not the region: frame t's pixel x comes from frame 0's point
    ``p_t(x) = p_{t-1}(x + flow_t(x))``, and the region is sampled once at ``p_t``. Resampling smooth coordinate
    maps keeps the region's edges sharp, where chaining the region itself would blur and erode it frame by frame.

    Args:
        hole: (H, W) bool region in frame 0.
        flow: (T - 1, H, W, 2) backward flow (see :func:`backward_flow`).

    Returns:
        (T, H, W) bool; frame 0 is ``hole``. Points that flow in from outside frame 0 are outside the region.
    """
    cv2 = require_cv2()
    hole = np.asarray(hole, bool)
    H, W = hole.shape
    base_u, base_v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    pu, pv = base_u.copy(), base_v.copy()  # frame-0 coordinates of each pixel (pixel indices)
    source = hole.astype(np.float32)
    out = [hole]
    for f in flow:
        map_u, map_v = base_u + f[..., 0], base_v + f[..., 1]
        pu = cv2.remap(pu, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        pv = cv2.remap(pv, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Content entering from outside the frame has no frame-0 origin: mark its coordinates out of range.
        outside = (map_u < -0.5) | (map_u > W - 0.5) | (map_v < -0.5) | (map_v > H - 0.5)
        pu, pv = np.where(outside, -10.0, pu).astype(np.float32), np.where(outside, -10.0, pv).astype(np.float32)
        sampled = cv2.remap(source, pu, pv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out.append(sampled >= 0.5)
    return np.stack(out)


def tracking_mask(frames: np.ndarray, hole: np.ndarray, settings: FlowSettings = FlowSettings()) -> np.ndarray:
    """A hole that moves with the scene: ``hole`` (in frame 0) carried along Farnebäck flow.

    Args:
        frames: (T, H, W, 3) uint8 RGB source clip.
        hole: (H, W) bool, True = hidden, in frame 0's image.
        settings: optical-flow parameters.

    Returns:
        (T, H, W) bool, True = kept, False = hidden; frame 0 is all True (the hole appears from frame 1 on, where
        frame 0's region has moved to).
    """
    frames = np.asarray(frames)
    hole = np.asarray(hole, bool)
    if hole.shape != frames.shape[1:3]:
        raise ValueError(f"hole must be {frames.shape[1:3]}, got {hole.shape}")
    keep = ~propagate_hole(hole, backward_flow(frames, settings))
    keep[0] = True
    return keep


def random_hole(height: int, width: int, rng: np.random.Generator, max_blobs: int = 3,
                size: tuple[float, float] = (0.12, 0.3)) -> np.ndarray:
    """A random region: the union of 1 to ``max_blobs`` rotated ellipses.

    Args:
        height, width: image size.
        rng: the random source (the result is a function of its state).
        max_blobs: most ellipses.
        size: range of the semi-axes as fractions of the image's smaller side.

    Returns:
        (H, W) bool, True inside the region (never empty).
    """
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    side = min(height, width)
    hole = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, max_blobs + 1))):
        cu, cv = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        a, b = rng.uniform(*size, 2) * side
        angle = rng.uniform(0, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        x, y = (u - cu) * c + (v - cv) * s, -(u - cu) * s + (v - cv) * c
        hole |= (x / a) ** 2 + (y / b) ** 2 <= 1.0
        hole[int(min(cv, height - 1)), int(min(cu, width - 1))] = True  # at least the centre pixel
    return hole
