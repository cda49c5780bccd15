"""Point-cloud forward splatting: the TrajectoryCrafter-style baseline to DW-Mesh (no mesh, no occluders).

Every source pixel (v, u) is lifted with its z-depth to a 3D point at its *centre* ``(u + 0.5, v + 0.5)`` (see
:mod:`ex4d.geometry.conventions`), moved into the target camera with ``w2c``, projected with the target
intrinsics and splatted to the one target pixel whose area ``[i, i+1) x [j, j+1)`` holds the projection, i.e. the
pixel with the nearest centre. A z-buffer keeps the nearest point per pixel (ties: lowest source pixel index, so the
result is deterministic). A point covers exactly one pixel: no radius, no hole filling, so disocclusions *and*
surfaces stretched by the new view show up as holes, while background seen through the holes of a foreground
surface leaks in.

Points with non-positive or non-finite depth, behind the near plane, beyond the far plane or projecting outside the
image are dropped. Everything is vectorised in torch (one ``scatter_reduce(amin)`` for the depth, one for the
winner index) and runs on the inputs' device, CPU or CUDA.
"""

from __future__ import annotations

import torch

from ex4d.geometry.conventions import PIXEL_CENTER, unproject_depth

__all__ = ["splat_points"]


def _batch_K(K: torch.Tensor, batch: int, device, name: str) -> torch.Tensor:
    K = torch.as_tensor(K, dtype=torch.float32, device=device)
    if K.shape == (3, 3):
        K = K.expand(batch, 3, 3)
    if K.shape != (batch, 3, 3):
        raise ValueError(f"{name}: expected shape (3, 3) or ({batch}, 3, 3), got {tuple(K.shape)}")
    return K


def splat_points(depth_z: torch.Tensor, frames: torch.Tensor, K_src: torch.Tensor, w2c: torch.Tensor,
                 K_tgt: torch.Tensor, near: float = 1e-3, far: float = 1e3,
                 pixel_offset: float = PIXEL_CENTER) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-splat each source frame's pixels into its target camera with a z-buffer.

    Args:
        depth_z: (B, H, W) source z-depth (world = source camera); pixels with depth <= 0 or non-finite are skipped.
        frames: (B, H, W, 3) uint8 source colours.
        K_src: (3, 3) or (B, 3, 3) source intrinsics.
        w2c: (B, 4, 4) target world-to-camera matrices (OpenCV axes).
        K_tgt: (3, 3) or (B, 3, 3) target intrinsics (the target image has the source's size H x W).
        near, far: camera-z range kept in the target camera (as :class:`ex4d.render.raster.RasterSettings`).
        pixel_offset: where in a source pixel its point is unprojected (0.5 = centre).

    Returns:
        ``color`` (B, H, W, 3) uint8 (black where not seen), ``seen`` (B, H, W) bool (a point landed there) and
        ``depth`` (B, H, W) float32 target z-depth of the winning point (0 where not seen), on the inputs' device.
    """
    depth_z = torch.as_tensor(depth_z)
    if depth_z.dim() != 3:
        raise ValueError(f"depth_z: expected shape (B, H, W), got {tuple(depth_z.shape)}")
    batch, height, width = depth_z.shape
    device = depth_z.device
    frames = torch.as_tensor(frames, device=device)
    if frames.shape != (batch, height, width, 3):
        raise ValueError(f"frames: expected shape ({batch}, {height}, {width}, 3), got {tuple(frames.shape)}")
    w2c = torch.as_tensor(w2c, dtype=torch.float32, device=device)
    if w2c.shape != (batch, 4, 4):
        raise ValueError(f"w2c: expected shape ({batch}, 4, 4), got {tuple(w2c.shape)}")
    K_src = _batch_K(K_src, batch, device, "K_src")
    K_tgt = _batch_K(K_tgt, batch, device, "K_tgt")

    depth = depth_z.to(torch.float32)
    n = height * width
    points = unproject_depth(depth, K_src, offset=pixel_offset).reshape(batch, n, 3)
    cam = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # (B, N, 3) in the target camera
    x, y, z = cam.unbind(-1)
    safe_z = torch.where(z > 0, z, torch.ones_like(z))
    u = K_tgt[:, None, 0, 0] * x / safe_z + K_tgt[:, None, 0, 2]
    v = K_tgt[:, None, 1, 1] * y / safe_z + K_tgt[:, None, 1, 2]
    # The pixel whose area [i, i+1) holds the projection is the one with the nearest centre i + 0.5.
    ui, vi = torch.floor(u), torch.floor(v)
    src_ok = (depth > 0).reshape(batch, n) & torch.isfinite(depth).reshape(batch, n)
    keep = (src_ok & torch.isfinite(z) & (z > near) & (z <= far) & torch.isfinite(u) & torch.isfinite(v)
            & (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height))

    b_idx = torch.arange(batch, device=device)[:, None].expand(batch, n)
    src_idx = torch.arange(n, device=device)[None].expand(batch, n)
    b_k, s_k, z_k = b_idx[keep], src_idx[keep], z[keep]
    tgt = b_k * n + vi[keep].long() * width + ui[keep].long()  # flat target pixel of every kept point

    # Pass 1: nearest depth per target pixel. Pass 2: lowest source index among the points at that depth.
    zbuf = torch.full((batch * n,), float("inf"), device=device)
    zbuf.scatter_reduce_(0, tgt, z_k, reduce="amin", include_self=True)
    at_front = z_k == zbuf[tgt]
    winner = torch.full((batch * n,), n, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, tgt[at_front], s_k[at_front], reduce="amin", include_self=True)

    seen = winner < n
    color = torch.zeros(batch * n, 3, dtype=torch.uint8, device=device)
    flat_frames = frames.reshape(batch * n, 3).to(torch.uint8)
    pix = seen.nonzero()[:, 0]
    color[pix] = flat_frames[(pix // n) * n + winner[pix]]
    depth_out = torch.where(seen, zbuf, torch.zeros_like(zbuf))
    return (color.reshape(batch, height, width, 3), seen.reshape(batch, height, width),
            depth_out.reshape(batch, height, width))
