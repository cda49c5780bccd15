"""Static-background plate: what the (static) source camera saw farthest at each pixel over the whole video.

ex4d's reconstruction places every frame in the source camera (``w2c`` of the source = identity for all t). With a
static camera, a moving object hides the background behind it only part of the time, so the farthest surface
seen at a pixel over all frames is that pixel's background. One DW-Mesh of this plate, rendered from each target
camera, recovers disoccluded background that any frame saw — not only the ±window neighbours of
:func:`ex4d.fill.offline.fill_from_neighbours` — at the cost of one mesh and one render per frame.
"""

from __future__ import annotations

import numpy as np
import torch

from ex4d.mesh.build import MeshBatch, MeshSettings, build_dw_mesh
from ex4d.render.dwmesh import RenderSettings, render_dw_mesh

#: Frames whose depth is within this relative distance of a pixel's farthest depth count as seeing its background.
PLATE_DEPTH_TOL = 0.01


def static_background(frames: np.ndarray, depth: np.ndarray, depth_tol: float = PLATE_DEPTH_TOL,
                      min_support: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel farthest surface over time.

    Args:
        frames: (T, H, W, 3) uint8 source video (static camera).
        depth: (T, H, W) positive z-depth.
        depth_tol: frames with depth >= (1 - depth_tol) · max_t depth see the background; their colours and
            depths are averaged (robust to depth noise and to which frame holds the exact maximum).
        min_support: a pixel whose background is seen in fewer frames is not trusted (``valid`` False): a single
            far outlier is more likely a depth error than background. Lowered to T when T is smaller.

    Returns:
        ``(color, depth, valid)``: (H, W, 3) uint8, (H, W) float32, (H, W) bool.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[:3] != np.shape(depth):
        raise ValueError(f"frames must be (T, H, W, 3) and depth (T, H, W); got {frames.shape} and {np.shape(depth)}")
    T, H, W = frames.shape[:3]
    # Two passes over the clip in chunks of frames, so memory does not grow with its length: the farthest depth,
    # then the sums over the frames near it. Colour sums are integers (exact in any order); depth sums in float64.
    far = np.zeros((H, W), np.float32)
    for lo in range(0, T, _CHUNK):
        np.maximum(far, np.asarray(depth[lo:lo + _CHUNK], np.float32).max(0), out=far)
    threshold = far * np.float32(1.0 - depth_tol)
    support = np.zeros((H, W), np.int64)
    color_sum = np.zeros((H, W, 3), np.int64)
    depth_sum = np.zeros((H, W), np.float64)
    for lo in range(0, T, _CHUNK):
        d = np.asarray(depth[lo:lo + _CHUNK], np.float32)
        near_far = d >= threshold  # (t, H, W)
        support += near_far.sum(0)
        color_sum += (frames[lo:lo + _CHUNK] * near_far[..., None]).sum(0, dtype=np.int64)
        depth_sum += np.where(near_far, d, 0).sum(0, dtype=np.float64)
    color = color_sum / support[..., None]
    plate_depth = depth_sum / support
    valid = support >= min(int(min_support), T)
    return np.rint(color).clip(0, 255).astype(np.uint8), plate_depth.astype(np.float32), valid


#: Frames read at a time by :func:`static_background`.
_CHUNK = 16


def fill_from_background(source_frames: np.ndarray, source_depth: np.ndarray, source_K: np.ndarray,
                         w2c: np.ndarray, target_K: np.ndarray, color: np.ndarray, mask: np.ndarray,
                         target_depth: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 8,
                         depth_tol: float = PLATE_DEPTH_TOL, min_support: int = 2,
                         mesh_settings: MeshSettings = MeshSettings(),
                         render_settings: RenderSettings = RenderSettings()
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill unseen target pixels with the static-background plate's DW-Mesh rendered from each target camera.

    Args:
        source_frames: (T, H, W, 3) uint8 source video.
        source_depth: (T, H, W) z-depth of the source frames (positive, finite).
        source_K: (3, 3) or (T, 3, 3) source intrinsics; the plate needs one camera, so per-frame intrinsics
            that differ return the inputs unchanged.
        w2c: (T, 4, 4) target world-to-camera matrices (world = the source camera).
        target_K: (3, 3) or (T, 3, 3) target intrinsics.
        color: (T, H', W', 3) uint8 render (black where ``mask`` is False).
        mask: (T, H', W') bool, True = already filled.
        target_depth: (T, H', W') z-depth of the render (``ReconResult.depth``).
        device, batch_size, mesh_settings, render_settings: as for :func:`ex4d.reconstruction.recon`.
        depth_tol, min_support: see :func:`static_background`.

    Returns:
        ``(color, filled, depth)``: copies with the recovered pixels written in (unchanged where ``mask``).
    """
    color = np.array(color, dtype=np.uint8, copy=True)
    filled = np.array(mask, dtype=bool, copy=True)
    out_depth = np.array(target_depth, dtype=np.float32, copy=True)
    T = color.shape[0]
    sK = np.asarray(source_K, np.float32)
    if sK.ndim == 3:
        if not np.allclose(sK, sK[:1]):
            return color, filled, out_depth
        sK = sK[0]
    if filled.all():
        return color, filled, out_depth
    plate, plate_depth, valid = static_background(source_frames, source_depth, depth_tol, min_support)
    dev = torch.device(device)
    mesh = build_dw_mesh(torch.from_numpy(plate_depth[None]).to(dev), torch.from_numpy(plate[None]).to(dev),
                         torch.from_numpy(sK[None]).to(dev), mesh_settings)
    # Untrusted plate pixels become invisible occluders (alpha 0), like stretched faces.
    mesh.colors = mesh.colors * torch.from_numpy(valid.reshape(1, -1, 1)).to(dev)
    tK = torch.as_tensor(np.asarray(target_K, np.float32)).expand(T, 3, 3)
    w2c_t = torch.as_tensor(np.asarray(w2c, np.float32))
    for start in range(0, T, batch_size):
        stop = min(start + batch_size, T)
        if filled[start:stop].all():
            continue
        n = stop - start
        batch = MeshBatch(mesh.vertices.expand(n, -1, -1), mesh.colors.expand(n, -1, -1), mesh.faces,
                          mesh.face_valid.expand(n, -1),
                          None if mesh.face_mask is None else mesh.face_mask.expand(n, -1), mesh.height, mesh.width)
        out = render_dw_mesh(batch, w2c_t[start:stop].to(dev), tK[start:stop].to(dev), render_settings)
        rgb = out.color.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        new = out.seen.cpu().numpy() & ~filled[start:stop]
        z = out.depth_z.cpu().numpy()
        color[start:stop][new] = rgb[new]
        out_depth[start:stop][new] = z[new]
        filled[start:stop] |= new
    return color, filled, out_depth
