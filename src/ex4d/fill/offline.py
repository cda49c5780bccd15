"""Offline fill: complete the "must be generated" pixels of a DW-Mesh render without learned weights.

Classical steps, so that the pipeline always yields a full video:

1. :func:`ex4d.fill.background.fill_from_background` — the static-background plate (the farthest surface each
   source pixel saw over the whole video) rendered from each target camera: background that a moving object
   uncovers at any time is recovered.
2. optionally :func:`fill_from_neighbours` — render the DW-Meshes of neighbouring *source* frames from each target
   camera and copy, for still-unfilled pixels, what they see (``window`` > 0).
3. :func:`ex4d.fill.inpaint.inpaint_background` — push-pull / Laplace inpainting of whatever remains, biased to
   the hole's far side (holes in a new view are revealed background, not the foreground object beside them).

:func:`offline_fill` chains them for a :class:`ex4d.reconstruction.ReconResult`. Measured against plain per-frame
inpainting on the ground-truth scenes: ``bench/fill.py``, ``docs/fill.md``.
"""

from __future__ import annotations

import numpy as np
import torch

from ex4d.fill.background import fill_from_background
from ex4d.fill.inpaint import BACKGROUND_BIAS, BACKGROUND_FINE_ITERS, inpaint_background
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
                         render_settings: RenderSettings = RenderSettings(), target_depth: np.ndarray | None = None):
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
        target_depth: optional (T, H, W) z-depth of the render; when given it is updated with the recovered
            pixels' depth and returned as a third element.

    Returns:
        ``(color, filled)``: (T, H, W, 3) uint8 with the recovered pixels written in (pixels where ``mask`` is
        True are unchanged), and (T, H, W) bool, ``mask`` plus the recovered pixels; ``(color, filled, depth)``
        when ``target_depth`` is given.
    """
    color = np.array(color, dtype=np.uint8, copy=True)
    filled = np.array(mask, dtype=bool, copy=True)
    out_depth = None if target_depth is None else np.array(target_depth, dtype=np.float32, copy=True)
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
            z = out.depth_z.cpu().numpy() if out_depth is not None else None
            for i, t in enumerate(targets):
                new = seen[i] & ~filled[t]
                color[t][new] = rgb[i][new]
                filled[t] |= new
                if out_depth is not None:
                    out_depth[t][new] = z[i][new]
    return (color, filled) if out_depth is None else (color, filled, out_depth)


def fill_sources(filled: np.ndarray, rim: int) -> np.ndarray:
    """Pixels that may feed the inpainting: ``filled`` minus a ``rim``-pixel band along every hole.

    Rendered pixels next to a hole are silhouette and stretched-edge samples (often a foreground colour over
    background, or aliased texture); continuing the hole from one pixel further in is more faithful. Frames that
    would lose every pixel keep ``filled``.

    Args:
        filled: (T, H, W) bool.
        rim: band width in pixels (0 = ``filled``).

    Returns:
        (T, H, W) bool.
    """
    filled = np.asarray(filled, bool)
    if rim <= 0 or filled.all():
        return filled.copy()
    hole = torch.from_numpy(~filled)[:, None].to(torch.float32)
    near_hole = torch.nn.functional.max_pool2d(hole, 2 * rim + 1, 1, rim)[:, 0].numpy() > 0
    src = filled & ~near_hole
    empty = ~src.reshape(len(src), -1).any(1)
    src[empty] = filled[empty]
    return src


#: Default rim (pixels) of rendered content not used as inpainting data, see :func:`fill_sources`.
SOURCE_RIM = 1


def offline_fill(result, source_depth: np.ndarray | None, window: int = 0, device: str | torch.device = "cpu",
                 batch_size: int = 8, mesh_settings: MeshSettings = MeshSettings(),
                 render_settings: RenderSettings = RenderSettings(), background: bool = True,
                 bias: float = BACKGROUND_BIAS, rim: int = SOURCE_RIM,
                 fine_iters: int = BACKGROUND_FINE_ITERS) -> np.ndarray:
    """Complete a reconstruction: static-background plate, neighbour frames, then background-biased inpainting.

    Args:
        result: a :class:`ex4d.reconstruction.ReconResult`.
        source_depth: (T, H, W) z-depth of the source frames, as given to ``recon`` (the result does not keep
            it); ``None`` skips the reprojection steps (inpainting only).
        window: neighbour frames used by :func:`fill_from_neighbours` after the plate (0 = none: the plate
            already holds every frame's background, and the bench shows no gain from neighbours on top of it).
        device, batch_size, mesh_settings, render_settings: see :func:`fill_from_neighbours` (use the settings
            ``recon`` used).
        background: use the static-background plate (:func:`ex4d.fill.background.fill_from_background`).
        bias: far-side preference of the inpainting (0 = plain Laplace, as :func:`ex4d.fill.inpaint.inpaint`).
        rim: see :func:`fill_sources`.
        fine_iters: full-resolution Jacobi iterations of the inpainting.

    Returns:
        (T, H, W, 3) uint8 video, equal to ``result.color`` wherever ``result.mask`` is True and filled
        everywhere else.
    """
    color, filled, depth = result.color, result.mask, result.depth
    if source_depth is not None and background and not filled.all():
        color, filled, depth = fill_from_background(result.source.frames, source_depth, result.source_K,
                                                    result.trajectory.w2c, result.K, color, filled, depth,
                                                    device=device, batch_size=batch_size,
                                                    mesh_settings=mesh_settings, render_settings=render_settings)
    if source_depth is not None and window > 0 and not filled.all():
        color, filled, depth = fill_from_neighbours(result.source.frames, source_depth, result.source_K,
                                                    result.trajectory.w2c, result.K, color, filled, window=window,
                                                    device=device, batch_size=batch_size,
                                                    mesh_settings=mesh_settings, render_settings=render_settings,
                                                    target_depth=depth)
    if filled.all():
        return np.array(color, copy=True)
    # Seen pixels always have a positive depth; a pixel that somehow has none counts as far (background).
    depth = np.where(depth > 0, depth, np.float32(depth.max(initial=1.0)))
    out = inpaint_background(color, fill_sources(filled, rim), depth, bias=bias, device=device,
                             fine_iters=fine_iters)
    out[filled] = color[filled]
    return out
