"""Pure-torch reference rasteriser: the specification of :func:`ex4d.render.raster.rasterize`.

Slow and memory-hungry (samples x triangles per frame), meant for tiny scenes in tests. Every sample point casts
the camera ray ``d = K^-1 [x, y, 1]`` (camera coordinates, ``d_z = 1``) against every triangle with the watertight
test of Woop et al. (2013): vertices are sheared into the ray's frame, ``P = (x - d_x z, y - d_y z)``, where the ray
is the origin; the barycentrics of the origin in triangle (P0, P1, P2) are ``b_i = E_i / (E_0 + E_1 + E_2)`` with
edge functions ``E_i = orient(P_j, P_k)`` ((i, j, k) cyclic). The sample is inside when the ray passes no more
than ``EDGE_TOL_PX`` pixels outside any edge (inclusive edges; in sheared space that is
``E_i sign(den) >= -tol z |P_k - P_j|``, tol = EDGE_TOL_PX / max(fx, fy)) and the hit's z-depth
``z = sum_i b_i z_i`` (= the ray parameter) lies in [near, far]. The nearest hit wins (ties: lowest face id) and its barycentrics interpolate the vertex attributes,
which is exactly perspective-correct.

Each edge function is computed from the edge's lower vertex index, so the two faces of an edge get bit-exact
opposite values: a sample on a shared edge or vertex is never dropped by rounding (as it is with
Moeller-Trumbore).
"""

from __future__ import annotations

import torch

from ex4d.render.raster import (
    EDGE_TOL_PX,
    RasterOutput,
    RasterSettings,
    camera_inputs,
    empty_output,
    validate_inputs,
)


def sample_points(height: int, width: int, supersample: int, device=None) -> torch.Tensor:
    """Continuous image coordinates of all samples, pixel (v, u) holding ``(u + (i+.5)/s, v + (j+.5)/s)``.

    Returns:
        (H*s, W*s, 2) float32 (x, y); sample (ky, kx) belongs to pixel (ky // s, kx // s).
    """
    s = supersample
    y = (torch.arange(height * s, device=device, dtype=torch.float32) + 0.5) / s
    x = (torch.arange(width * s, device=device, dtype=torch.float32) + 0.5) / s
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def edge_function(pa: torch.Tensor, pb: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """``orient(pa, pb) = pa_x pb_y - pa_y pb_x``, from the edge's lower vertex index (exact antisymmetry).

    Args:
        pa, pb: (..., F, 2) sheared edge end points; ia, ib: (F,) their vertex indices.

    Returns:
        (..., F). Plain elementwise ops (no fused kernels), so equal inputs give bit-equal outputs.
    """
    forward = pa[..., 0] * pb[..., 1] - pa[..., 1] * pb[..., 0]
    backward = -(pb[..., 0] * pa[..., 1] - pb[..., 1] * pa[..., 0])
    return torch.where(ia < ib, forward, backward)


def ray_triangle(d: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, tol: torch.Tensor):
    """Intersect rays from the camera centre with every triangle (watertight test).

    Args:
        d: (S, 3) ray directions with d_z = 1.
        verts: (N, 3) camera-space vertices.
        faces: (F, 3) vertex indices.
        tol: () float32 inclusive-edge tolerance in normalised image units.

    Returns:
        (b1, b2, z, inside), each (S, F): barycentrics of vertices 1 and 2, hit z-depth, inclusive inside test.
    """
    v = verts[faces]  # (F, 3 corners, 3)
    p = v[None, :, :, :2] - d[:, None, None, :2] * v[None, :, :, 2:]  # (S, F, 3, 2) sheared: the ray is the origin
    i0, i1, i2 = faces.unbind(1)
    e = torch.stack([edge_function(p[:, :, 1], p[:, :, 2], i1, i2), edge_function(p[:, :, 2], p[:, :, 0], i2, i0),
                     edge_function(p[:, :, 0], p[:, :, 1], i0, i1)], dim=-1)  # (S, F, 3)
    den = e[..., 0] + e[..., 1] + e[..., 2]
    b1, b2 = e[..., 1] / den, e[..., 2] / den
    z = (1.0 - b1 - b2) * v[:, 0, 2] + b1 * v[:, 1, 2] + b2 * v[:, 2, 2]
    edge_len = torch.stack([(p[:, :, 2] - p[:, :, 1]).norm(dim=-1), (p[:, :, 0] - p[:, :, 2]).norm(dim=-1),
                            (p[:, :, 1] - p[:, :, 0]).norm(dim=-1)], dim=-1)
    inside = (den != 0) & (e * torch.sign(den)[..., None] >= (-tol * z)[..., None] * edge_len).all(dim=-1)
    return b1, b2, z, inside


def rasterize_torch(vertices: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor, w2c: torch.Tensor,
                    K: torch.Tensor, height: int, width: int, settings: RasterSettings = RasterSettings(),
                    face_mask: torch.Tensor | None = None) -> RasterOutput:
    """Reference rasteriser; same contract as :func:`ex4d.render.raster.rasterize`.

    Args:
        vertices: (B, N, 3) float32 world coordinates.
        faces: (F, 3) int32/int64 vertex indices, shared by all B meshes.
        attributes: (B, N, C) float32 per-vertex attributes.
        w2c: (B, 4, 4) world-to-camera (OpenCV).
        K: (3, 3) or (B, 3, 3) intrinsics, last row [0, 0, 1].
        height: output rows H.
        width: output columns W.
        settings: near/far planes and supersampling.
        face_mask: (B, F) bool, False = face not rendered in that frame.

    Returns:
        RasterOutput with attributes (B, H, W, C), depth (B, H, W), coverage (B, H, W).
    """
    vertices, faces, attributes, w2c, K, face_mask = validate_inputs(
        vertices, faces, attributes, w2c, K, height, width, settings, face_mask)
    B, F, C, dev, s = vertices.shape[0], faces.shape[0], attributes.shape[2], vertices.device, settings.supersample
    height, width, s = int(height), int(width), int(s)
    if F == 0:
        return empty_output(B, height, width, C, dev)
    verts_cam, K_inv = camera_inputs(vertices, w2c, K)
    xy = sample_points(height, width, s, dev).reshape(-1, 2)
    p = torch.cat([xy, torch.ones_like(xy[:, :1])], dim=1)  # (S, 3) homogeneous pixel coordinates
    attrs, depths, covs = [], [], []
    for b in range(B):
        d = p @ K_inv[b].T  # (S, 3), d_z == 1
        tol = EDGE_TOL_PX / torch.maximum(K[b, 0, 0], K[b, 1, 1])
        b1, b2, t, inside = ray_triangle(d, verts_cam[b], faces, tol)
        hit = inside & (t >= settings.near) & (t <= settings.far)
        if face_mask is not None:
            hit &= face_mask[b][None]
        z = torch.where(hit, t, torch.full_like(t, float("inf")))
        zmin, win = z.min(dim=1)  # first minimum -> lowest face id on ties
        covered = torch.isfinite(zmin)
        w1 = b1.gather(1, win[:, None])[:, 0]
        w2 = b2.gather(1, win[:, None])[:, 0]
        a = attributes[b][faces[win]]  # (S, 3, C)
        w0 = 1.0 - w1 - w2
        outside = (w0 < 0) | (w1 < 0) | (w2 < 0)  # accepted by the edge tolerance: clamp onto the face
        if bool(outside.any()):
            c0, c1, c2 = w0.clamp_min(0), w1.clamp_min(0), w2.clamp_min(0)
            tot = c0 + c1 + c2
            safe = torch.where(tot > 0, tot, torch.ones_like(tot))
            c0 = torch.where(tot > 0, c0 / safe, torch.ones_like(c0))
            c1, c2 = torch.where(tot > 0, c1 / safe, 0 * c1), torch.where(tot > 0, c2 / safe, 0 * c2)
            w0, w1, w2 = (torch.where(outside, c, w) for c, w in ((c0, w0), (c1, w1), (c2, w2)))
        val = w0[:, None] * a[:, 0] + w1[:, None] * a[:, 1] + w2[:, None] * a[:, 2]
        val = torch.where(covered[:, None], val, torch.zeros_like(val))
        cov = covered.float().reshape(height, s, width, s).mean(dim=(1, 3))
        zsum = torch.where(covered, zmin, torch.zeros_like(zmin)).reshape(height, s, width, s).sum(dim=(1, 3))
        n = covered.float().reshape(height, s, width, s).sum(dim=(1, 3))
        attrs.append(val.reshape(height, s, width, s, C).mean(dim=(1, 3)))
        depths.append(torch.where(n > 0, zsum / n.clamp(min=1), torch.zeros_like(zsum)))
        covs.append(cov)
    return RasterOutput(torch.stack(attrs), torch.stack(depths), torch.stack(covs))
