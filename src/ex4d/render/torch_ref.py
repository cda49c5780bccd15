"""Pure-torch reference rasteriser: the specification of :func:`ex4d.render.raster.rasterize`.

Meant for tests and as a check on the Warp rasteriser; plain torch on any device. Every sample point casts
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

Bounded memory: the samples are split into tiles (a quadtree over the sample grid) and each tile tests only its
candidate triangles, in chunks of at most ``max_pairs`` (sample, triangle) pairs. A triangle is dropped from a tile
only when no ray of the tile can pass the test above: the edge functions are affine in the ray ``d`` (``E_i = d .
(v_j x v_k)``), so their range over the tile's box of rays is spanned by its 4 corners, as are the hit depth's
(a ratio of affine functions with a denominator of fixed sign) and the edge lengths' maxima (convex); the bounds keep
a wide margin for float rounding. The tested pairs are a subset of the all-pairs test and every kept pair is
computed by the same elementwise operations, so the result is bit-identical to testing every sample against every
triangle (``tile=None``; tests check it).
"""

from __future__ import annotations

import torch

from ex4d.render.raster_spec import (
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


#: (sample, triangle) pairs tested at once: about 40 float32 temporaries each, so about 80 MB per chunk.
MAX_PAIRS = 1 << 19
#: Side of the smallest tile, in samples: the quadtree splits tiles down to this size, culling faces at every level.
TILE = 8
#: Float32 unit roundoff and the factor by which the candidate bounds overestimate the test's rounding errors.
_EPS, _SAFETY = 2.0 ** -24, 8.0


class _FaceBounds:
    """Per-frame float64 data of the candidate test: (F, 3 edges, 3) ``v_j x v_k``, vertex coordinates, edges."""

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor):
        v = verts.double()[faces]  # (F, 3 corners, 3)
        j, k = v[:, [1, 2, 0]], v[:, [2, 0, 1]]  # edge i runs from vertex j to vertex k
        self.cross = torch.linalg.cross(j, k)  # (F, 3, 3): E_i(d) = d . cross_i with d = (d_x, d_y, 1)
        self.xy, self.z = v[..., :2], v[..., 2]  # (F, 3, 2), (F, 3)
        self.dxy, self.dz = (k - j)[..., :2], (k - j)[..., 2]  # P_k - P_j = dxy - d_xy dz

    def candidates(self, ids: torch.Tensor, d_lo: torch.Tensor, d_hi: torch.Tensor, tol: float, near: float,
                   far: float) -> torch.Tensor:
        """The faces among ``ids`` (sorted) that a ray in the box [d_lo, d_hi] (2,) might hit; a sorted subset."""
        if ids.numel() == 0:
            return ids
        corners = torch.stack([torch.stack([d_lo[0], d_lo[1]]), torch.stack([d_hi[0], d_lo[1]]),
                               torch.stack([d_lo[0], d_hi[1]]), torch.stack([d_hi[0], d_hi[1]])]).double()  # (4, 2)
        dmax = float(torch.maximum(d_lo.abs(), d_hi.abs()).max())
        cross, xy, z = self.cross[ids], self.xy[ids], self.z[ids]
        e = torch.einsum("fic,kc->fki", cross[..., :2], corners) + cross[:, None, :, 2]  # (F, 4 corners, 3 edges)
        # float32 rounding of the test: sheared P = xy - d z is off by <= eps (|xy| + |d| |z|) (= dP); an edge
        # function P_j x P_k by <= dP_j |P_k| + |P_j| dP_k + 2 eps |P_j| |P_k|, |P| at most its corner maximum
        sheared = (xy[:, None] - corners[None, :, None, :] * z[:, None, :, None]).abs().amax(dim=(1, 3))  # (F, 3)
        dp = _EPS * (xy.abs().amax(dim=-1) + dmax * z.abs())  # (F, 3)
        pj, pk, dj, dk = sheared[:, [1, 2, 0]], sheared[:, [2, 0, 1]], dp[:, [1, 2, 0]], dp[:, [2, 0, 1]]
        slop = _SAFETY * (dj * (pk + dk) + (pj + dj) * dk + 2 * _EPS * (pj + dj) * (pk + dk))  # (F, 3 edges)
        den = e.sum(dim=-1)  # (F, 4)
        den_lo, den_hi = den.amin(dim=1), den.amax(dim=1)
        den_slop = slop.sum(dim=1) + _SAFETY * 2 * _EPS * e.abs().amax(dim=1).sum(dim=1)
        fixed = (den_lo > den_slop) | (den_hi < -den_slop)  # den's sign is known in the whole box
        sign = torch.where(den_hi > 0, 1.0, -1.0).to(den)
        den_min = den.abs().amin(dim=1).clamp_min(1e-300)
        depth = (e * z[:, None, :]).sum(dim=-1) / torch.where(fixed[:, None], den, torch.ones_like(den))  # (F, 4)
        z_lo, z_hi = depth.amin(dim=1), depth.amax(dim=1)  # a ratio of affine maps, fixed-sign denominator
        # float32 rounding of the hit depth sum_i z_i E_i / den: the edge functions' errors over |den|
        b_max = e.abs().amax(dim=1).sum(dim=1) / den_min
        z_slop = _SAFETY * z.abs().amax(dim=1) * ((slop.sum(dim=1) + b_max * den_slop) / den_min
                                                  + 8 * _EPS * (1 + b_max))
        seg = self.dxy[ids][:, None] - corners[None, :, None, :] * self.dz[ids][:, None, :, None]  # (F, 4, 3, 2)
        length = seg.norm(dim=-1).amax(dim=1)  # (F, 3): edge lengths in sheared space, max over the box (convex)
        z_top = torch.minimum(z_hi.abs() + z_slop, torch.full_like(z_hi, far)) * 1.01
        reach = (sign[:, None, None] * e).amax(dim=1) + 1.01 * tol * z_top[:, None] * length + slop  # (F, 3)
        possible = (reach >= 0).all(dim=1) & (z_hi + z_slop >= near) & (z_lo - z_slop <= far)
        # whatever den's sign: a hit needs every E_i on den's side up to tol far |P_k - P_j| (its float z <= far)
        pad = 1.01 * tol * far * length + slop
        either = ((e.amax(dim=1) + pad >= 0).all(dim=1)) | ((-e).amax(dim=1) + pad >= 0).all(dim=1)
        return ids[either & (~fixed | possible)]


def _nearest_hits(d: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, face_ids: torch.Tensor,
                  tol: torch.Tensor, settings: RasterSettings, tile: int | None, max_pairs: int):
    """Nearest accepted hit of every sample (ties: lowest face id).

    Args:
        d: (Hs, Ws, 3) sample rays, d_z = 1. verts: (N, 3) camera space. faces: (F, 3). face_ids: (F',) sorted ids
        of the faces rendered in this frame. tile: smallest tile side in samples; None tests every pair.

    Returns:
        (zmin, win, w1, w2), each (Hs*Ws,): hit depth (inf = no hit), face id and barycentrics of the winner.
    """
    Hs, Ws = d.shape[:2]
    zmin = torch.full((Hs, Ws), float("inf"), device=d.device)
    win = torch.zeros((Hs, Ws), dtype=torch.long, device=d.device)
    w1, w2 = torch.zeros_like(zmin), torch.zeros_like(zmin)
    bounds = _FaceBounds(verts, faces) if tile is not None else None
    near, far = settings.near, settings.far

    def test(ys: slice, xs: slice, ids: torch.Tensor) -> None:
        rays = d[ys, xs].reshape(-1, 3)
        best = zmin[ys, xs].reshape(-1)
        chunk = max(1, max_pairs // rays.shape[0])
        for start in range(0, ids.numel(), chunk):
            cid = ids[start:start + chunk]
            b1, b2, t, inside = ray_triangle(rays, verts, faces[cid], tol)
            hit = inside & (t >= near) & (t <= far)
            z = torch.where(hit, t, torch.full_like(t, float("inf")))
            cmin, cwin = z.min(dim=1)  # first minimum -> lowest face id within the chunk
            better = cmin < best  # strict: an earlier chunk (lower ids) keeps a tie
            best = torch.where(better, cmin, best)
            zmin[ys, xs] = best.reshape(zmin[ys, xs].shape)
            for out, val in ((win, cid[cwin]), (w1, b1.gather(1, cwin[:, None])[:, 0]),
                             (w2, b2.gather(1, cwin[:, None])[:, 0])):
                region = out[ys, xs]
                out[ys, xs] = torch.where(better, val, region.reshape(-1)).reshape(region.shape)

    def visit(y0: int, y1: int, x0: int, x1: int, ids: torch.Tensor) -> None:
        ys, xs = slice(y0, y1), slice(x0, x1)
        box = d[ys, xs, :2].reshape(-1, 2)
        ids = bounds.candidates(ids, box.amin(dim=0), box.amax(dim=0), float(tol), near, far)
        if ids.numel() == 0:
            return
        if max(y1 - y0, x1 - x0) <= tile:
            test(ys, xs, ids)
            return
        ym, xm = (y0 + y1) // 2, (x0 + x1) // 2
        for a, b in ((y0, ym), (ym, y1)):
            for c, e in ((x0, xm), (xm, x1)):
                if a < b and c < e:
                    visit(a, b, c, e, ids)

    if tile is None:
        rows = max(1, max_pairs // max(1, Ws * face_ids.numel()))  # whole rows of samples per step, all faces
        for y in range(0, Hs, rows):
            test(slice(y, min(Hs, y + rows)), slice(0, Ws), face_ids)
    else:
        visit(0, Hs, 0, Ws, face_ids)
    return zmin.reshape(-1), win.reshape(-1), w1.reshape(-1), w2.reshape(-1)


def rasterize_torch(vertices: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor, w2c: torch.Tensor,
                    K: torch.Tensor, height: int, width: int, settings: RasterSettings = RasterSettings(),
                    face_mask: torch.Tensor | None = None, tile: int | None = TILE,
                    max_pairs: int = MAX_PAIRS) -> RasterOutput:
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
        tile: smallest tile side in samples of the candidate culling; None tests every sample against every face
            (same result, much slower).
        max_pairs: (sample, face) pairs tested at once, which bounds the memory.

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
    all_ids = torch.arange(F, device=dev)
    attrs, depths, covs = [], [], []
    for b in range(B):
        d = p @ K_inv[b].T  # (S, 3), d_z == 1
        tol = EDGE_TOL_PX / torch.maximum(K[b, 0, 0], K[b, 1, 1])
        ids = all_ids if face_mask is None else all_ids[face_mask[b]]
        zmin, win, w1, w2 = _nearest_hits(d.reshape(height * s, width * s, 3), verts_cam[b], faces, ids, tol,
                                          settings, tile, max_pairs)
        covered = torch.isfinite(zmin)
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
