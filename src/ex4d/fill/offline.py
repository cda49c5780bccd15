"""Offline fill: complete the "must be generated" pixels of a DW-Mesh render without learned weights.

Two classical steps, so that the pipeline always yields a full video:

1. :func:`fill_from_neighbours` — render the DW-Meshes of neighbouring *source* frames from each target camera and
   copy, for still-unfilled pixels, what they see. Content that a moving object covers in frame t but uncovers
   in a nearby frame (and static background seen from the same source camera at another time) is recovered.
2. :func:`ex4d.fill.inpaint.inpaint` — smooth push-pull / Laplace inpainting of whatever remains.

:func:`offline_fill` chains both for a :class:`ex4d.reconstruction.ReconResult`.
"""

from __future__ import annotations

import numpy as np
import torch

from ex4d.fill.inpaint import inpaint
from ex4d.mesh.build import MeshBatch, MeshSettings, build_dw_mesh
from ex4d.render.dwmesh import RenderSettings, render_dw_mesh


def neighbour_offsets(window: int) -> list[int]:
    """Frame offsets t' - t in the order they are tried: nearest first, the earlier frame first on ties."""
    return [s * d for d in range(1, int(window) + 1) for s in (-1, 1)]


def _select(mesh: MeshBatch, idx: torch.Tensor) -> MeshBatch:
    return MeshBatch(mesh.vertices[idx], mesh.colors[idx], mesh.faces, mesh.face_valid[idx],
                     None if mesh.face_mask is None else mesh.face_mask[idx], mesh.height, mesh.width)


def fill_from_neighbours(source_frames: np.ndarray, source_depth: np.ndarray, source_K: np.ndarray,
                         w2c: np.ndarray, target_K: np.ndarray, color: np.ndarray, mask: np.ndarray,
                         window: int = 4, device: str | torch.device = "cpu", batch_size: int = 8,
                         depth_tol: float | None = 0.02, mesh_settings: MeshSettings = MeshSettings(),
                         render_settings: RenderSettings = RenderSettings()) -> tuple[np.ndarray, np.ndarray]:
    """Fill unseen target pixels from the DW-Meshes of neighbouring source frames.

    For each target frame t and each neighbour t' with 0 < |t' - t| <= ``window`` (nearest first, see
    :func:`neighbour_offsets`), source frame t''s DW-Mesh is rendered from camera t (``w2c[t]``,
    ``target_K[t]``); every still-unfilled pixel that this render sees takes its colour.

    Args:
        source_frames: (T, H, W, 3) uint8 source video.
        source_depth: (T, H, W) z-depth of the source frames (positive, finite).
        source_K: (3, 3) or (T, 3, 3) source intrinsics.
        w2c: (T, 4, 4) target world-to-camera matrices (world = the source camera).
        target_K: (3, 3) or (T, 3, 3) target intrinsics.
        color: (T, H, W, 3) uint8 render of frame t's own mesh (black where ``mask`` is False).
        mask: (T, H, W) bool, True = already filled (seen in the source at time t).
        window: largest frame distance used; 0 returns the inputs unchanged.
        device: where meshes are built and rendered.
        batch_size: target frames processed together.
        mesh_settings, render_settings: as for :func:`ex4d.reconstruction.recon`.

    Returns:
        ``(color, filled)``: (T, H, W, 3) uint8 with the recovered pixels written in (pixels where ``mask`` is
        True are unchanged), and (T, H, W) bool, ``mask`` plus the recovered pixels.
    """
    color = np.array(color, dtype=np.uint8, copy=True)
    filled = np.array(mask, dtype=bool, copy=True)
    T = color.shape[0]
    if source_frames.shape[0] != T or np.shape(source_depth)[0] != T or np.shape(w2c)[0] != T:
        raise ValueError("source_frames, source_depth, w2c and color must have the same number of frames")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    dev = torch.device(device)
    sK = torch.as_tensor(np.asarray(source_K, np.float32)).expand(T, 3, 3)
    tK = torch.as_tensor(np.asarray(target_K, np.float32)).expand(T, 3, 3)
    w2c_t = torch.as_tensor(np.asarray(w2c, np.float32))
    offsets = neighbour_offsets(window)
    depth_all = torch.as_tensor(np.asarray(source_depth, np.float32))
    for start in range(0, T, batch_size):
        stop = min(start + batch_size, T)
        if filled[start:stop].all() or not offsets:
            continue
        # Build the meshes of every source frame this chunk may use, once.
        lo, hi = max(0, start - window), min(T, stop + window)
        mesh = build_dw_mesh(depth_all[lo:hi].to(dev),
                             torch.as_tensor(np.ascontiguousarray(source_frames[lo:hi])).to(dev),
                             sK[lo:hi].to(dev), mesh_settings)
        for off in offsets:
            targets = [t for t in range(start, stop) if 0 <= t + off < T and not filled[t].all()]
            if not targets:
                continue
            tt = torch.tensor(targets)
            nb = _select(mesh, (tt + off - lo).to(dev))
            if depth_tol is not None:
                # Content that moved *in* between t and t' (nearer at t' than at t) does not exist at time t:
                # it stays an invisible occluder. Revealed background (farther at t') and static surfaces pass.
                d_t, d_nb = depth_all[tt], depth_all[tt + off]
                keep = (d_nb >= d_t * (1.0 - depth_tol)).reshape(len(targets), -1).to(dev)
                nb.colors = nb.colors * keep[..., None]
            out = render_dw_mesh(nb, w2c_t[tt].to(dev), tK[tt].to(dev), render_settings)
            rgb = out.color.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
            seen = out.seen.cpu().numpy()
            for i, t in enumerate(targets):
                new = seen[i] & ~filled[t]
                color[t][new] = rgb[i][new]
                filled[t] |= new
    return color, filled


def offline_fill(result, source_depth: np.ndarray | None, window: int = 4, device: str | torch.device = "cpu",
                 batch_size: int = 8, mesh_settings: MeshSettings = MeshSettings(),
                 render_settings: RenderSettings = RenderSettings()) -> np.ndarray:
    """Complete a reconstruction: neighbour-frame reprojection, then inpainting of what remains.

    Args:
        result: a :class:`ex4d.reconstruction.ReconResult`.
        source_depth: (T, H, W) z-depth of the source frames, as given to ``recon`` (the result does not keep
            it); ``None`` skips the neighbour step (inpainting only).
        window, device, batch_size, mesh_settings, render_settings: see :func:`fill_from_neighbours`
            (use the settings ``recon`` used).

    Returns:
        (T, H, W, 3) uint8 video, equal to ``result.color`` wherever ``result.mask`` is True and filled
        everywhere else.
    """
    color, filled = result.color, result.mask
    if source_depth is not None and window > 0 and not filled.all():
        color, filled = fill_from_neighbours(result.source.frames, source_depth, result.source_K,
                                             result.trajectory.w2c, result.K, color, filled, window=window,
                                             device=device, batch_size=batch_size, mesh_settings=mesh_settings,
                                             render_settings=render_settings)
    return inpaint(color, filled, device=device)
