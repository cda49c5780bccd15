"""Triangle rasteriser (NVIDIA Warp, one kernel source for CPU and CUDA).

The specification is :func:`ex4d.render.torch_ref.rasterize_torch` (ray casting); this module computes the same
thing fast. Conventions are those of :mod:`ex4d.geometry.conventions`: OpenCV camera, pixel (v, u) sampled at
``(u + 0.5, v + 0.5)``, depth = camera z. With ``supersample = s`` pixel (v, u) has s x s samples at
``(u + (i + 0.5) / s, v + (j + 0.5) / s)``.

Algorithm: every sample's camera ray ``d = K^-1 [x, y, 1]`` (``d_z = 1``) is intersected, with the reference's
own arithmetic, with the triangles whose near-clipped screen bounding box holds it. The test is watertight
(Woop et al. 2013): vertices are sheared into the ray's frame, ``P = (x - d_x z, y - d_y z)`` (per vertex and ray,
the same numbers for every face), and the barycentrics of the origin are 2D edge functions, each evaluated from
its edge's lower vertex index so the two faces of an edge get bit-exact opposite values. A sample on a shared edge
or vertex thus always lands in some face (Moeller-Trumbore left ~10% of the pixels of a 512^2 depth mesh,
re-rendered from its own camera, uncovered). ``z = sum_i b_i z_i`` is the hit's z-depth.

* pass 1: one thread per (frame, triangle) ``atomic_min``s hit depths into a z-buffer; triangles whose bbox
  exceeds ``_BIG`` samples are queued and handled by a second launch over (queued triangle, bbox tile);
* pass 2: same traversal, samples whose depth equals the z-buffer ``atomic_min`` the face id (ties -> lowest id);
* pass 3: one thread per pixel re-derives the winner's barycentrics and averages attributes over its samples.
"""

# No `from __future__ import annotations`: Warp evaluates the nested kernels' annotations in their closure.
import contextlib
import functools
import numbers
from dataclasses import dataclass

import torch

from ex4d.geometry.conventions import transform_points

#: Inclusive-edge tolerance, in pixels (at focal max(fx, fy)): a sample this close outside a triangle counts as in.
#: Shared edges/vertices need none (the test is watertight); it settles samples exactly on a mesh's outer border
#: (e.g. a depth-map mesh seen from its own camera), where float32 rounding is ~1e-5 px. Unlike a barycentric
#: tolerance it does not grow with the triangle (huge skirt faces would bleed).
EDGE_TOL_PX = 1e-3
_BIG = 256  # bbox samples above which a triangle is split into tiles (keeps GPU threads balanced)
_TILE = 16  # tile side, in samples
_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class RasterSettings:
    """Rasteriser options.

    Attributes:
        near: near plane (camera z); surface closer than this is clipped away.
        far: far plane (camera z); surface farther than this is not rendered.
        supersample: s >= 1; each pixel averages s x s samples (edge antialiasing).
    """

    near: float = 1e-3
    far: float = 1e3
    supersample: int = 1


@dataclass
class RasterOutput:
    """Rasteriser result, on the inputs' device.

    Attributes:
        attributes: (B, H, W, C) float32, mean over the pixel's samples, uncovered samples counting as 0.
        depth: (B, H, W) float32 camera z of the nearest hit, mean over covered samples; 0 where nothing was hit.
        coverage: (B, H, W) float32 in [0, 1], fraction of the pixel's samples that hit a triangle.
    """

    attributes: torch.Tensor
    depth: torch.Tensor
    coverage: torch.Tensor


def _shape_error(name: str, expected: str, tensor) -> ValueError:
    actual = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
    return ValueError(f"{name}: expected shape {expected}, got {actual}")


def validate_inputs(vertices, faces, attributes, w2c, K, height, width, settings, face_mask):
    """Check the public arguments and bring them to canonical dtypes/shapes (shared by both implementations).

    Returns:
        (vertices (B, N, 3) f32, faces (F, 3) int64, attributes (B, N, C) f32, w2c (B, 4, 4) f32,
        K (B, 3, 3) f32, face_mask (B, F) bool or None).

    Raises:
        ValueError: on a bad shape, dtype, device, index or setting; the message names the argument.
    """
    for name, t in (("vertices", vertices), ("faces", faces), ("attributes", attributes), ("w2c", w2c), ("K", K)):
        if not torch.is_tensor(t):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise _shape_error("vertices", "(B, N, 3)", vertices)
    B, N = vertices.shape[:2]
    if B < 1:
        raise _shape_error("vertices", "(B, N, 3) with B >= 1", vertices)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise _shape_error("faces", "(F, 3)", faces)
    if faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces: expected dtype int32 or int64, got {faces.dtype}")
    if attributes.ndim != 3 or attributes.shape[:2] != (B, N):
        raise _shape_error("attributes", f"({B}, {N}, C)", attributes)
    if w2c.shape != (B, 4, 4):
        raise _shape_error("w2c", f"({B}, 4, 4)", w2c)
    if K.shape == (3, 3):
        K = K.expand(B, 3, 3)
    elif K.shape != (B, 3, 3):
        raise _shape_error("K", f"(3, 3) or ({B}, 3, 3)", K)
    for name, t in (("vertices", vertices), ("attributes", attributes), ("w2c", w2c), ("K", K)):
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if not torch.all(K[:, 2] == torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype, device=K.device)):
        raise ValueError("K: expected last row [0, 0, 1] (pinhole intrinsics)")
    if not (isinstance(height, numbers.Integral) and isinstance(width, numbers.Integral) and height > 0 < width):
        raise ValueError(f"height, width: expected positive ints, got {height!r}, {width!r}")
    s = settings.supersample
    if not (isinstance(s, numbers.Integral) and s >= 1):
        raise ValueError(f"settings.supersample: expected an int >= 1, got {s!r}")
    if not (0.0 < settings.near < settings.far):
        raise ValueError(f"settings: expected 0 < near < far, got near={settings.near}, far={settings.far}")
    if face_mask is not None:
        if not torch.is_tensor(face_mask) or face_mask.shape != (B, faces.shape[0]):
            raise _shape_error("face_mask", f"({B}, {faces.shape[0]})", face_mask)
        face_mask = face_mask.to(device=vertices.device, dtype=torch.bool)
    dev = vertices.device
    for name, t in (("faces", faces), ("attributes", attributes), ("w2c", w2c), ("K", K)):
        if t.device != dev:
            raise ValueError(f"{name}: expected device {dev} (that of vertices), got {t.device}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= N):
        raise ValueError(f"faces: expected indices in [0, {N}), got range [{int(faces.min())}, {int(faces.max())}]")
    return (vertices.float(), faces.long(), attributes.float(), w2c.float(), K.float(), face_mask)


def camera_inputs(vertices: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor):
    """Camera-space vertices and exact-last-row ``K^-1`` (shared so both implementations see the same numbers).

    Returns:
        (verts_cam (B, N, 3) f32 contiguous, K_inv (B, 3, 3) f32 with last row exactly [0, 0, 1]).
    """
    verts_cam = transform_points(w2c.double(), vertices.double()).float().contiguous()
    K_inv = torch.linalg.inv(K.double())
    K_inv[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=K_inv.dtype, device=K_inv.device)  # keeps d_z == 1 exactly
    return verts_cam, K_inv.float().contiguous()


def empty_output(B: int, height: int, width: int, C: int, device) -> RasterOutput:
    """All-zero output (nothing hit)."""
    z = torch.zeros(B, height, width, device=device)
    return RasterOutput(torch.zeros(B, height, width, C, device=device), z, z.clone())


@functools.lru_cache(maxsize=None)
def _warp():
    import warp as wp

    if hasattr(wp.config, "log_level") and hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = wp.LOG_WARNING
    else:  # older Warp
        wp.config.quiet = True
    wp.init()
    return wp


@functools.lru_cache(maxsize=None)
def _kernels():
    wp = _warp()
    tol_px, big, tile, int_max = float(EDGE_TOL_PX), _BIG, _TILE, _INT_MAX

    @wp.struct
    class Tri:
        ok: int
        x0: int  # sample bbox, inclusive
        y0: int
        x1: int
        y1: int
        v0: wp.vec3
        v1: wp.vec3
        v2: wp.vec3
        idx: wp.vec3i  # vertex indices
        kinv: wp.mat33
        tol: float  # EDGE_TOL_PX in normalised image units

    @wp.func
    def coeffs(v0: wp.vec3, v1: wp.vec3, v2: wp.vec3, i0: int, i1: int, i2: int, kinv: wp.mat33, K: wp.mat33) -> Tri:
        r = Tri()
        r.v0 = v0
        r.v1 = v1
        r.v2 = v2
        r.idx = wp.vec3i(i0, i1, i2)
        r.kinv = kinv
        r.tol = tol_px / wp.max(K[0, 0], K[1, 1])
        return r

    @wp.func
    def shear(v: wp.vec3, d: wp.vec3) -> wp.vec2:
        return wp.vec2(v[0] - d[0] * v[2], v[1] - d[1] * v[2])

    @wp.func
    def edge_fn(pa: wp.vec2, pb: wp.vec2, ia: int, ib: int) -> float:
        # orient(pa, pb), computed from the lower vertex index: the edge's two faces get exact negatives
        if ia < ib:
            return pa[0] * pb[1] - pa[1] * pb[0]
        return -(pb[0] * pa[1] - pb[1] * pa[0])

    @wp.func
    def edge_in(e: float, t: float, pa: wp.vec2, pb: wp.vec2) -> bool:
        # e >= t |pb - pa|; the length is only needed off the inner side (t <= 0 wherever z >= near > 0)
        if e >= 0.0 and t <= 0.0:
            return True
        return e >= t * wp.length(pb - pa)

    @wp.func
    def hit(r: Tri, kx: int, ky: int, inv_s: float) -> wp.vec4:
        # (b1, b2, z, ok) of the ray through sample (kx, ky); ok = 1 inside the triangle (inclusive edges)
        d = r.kinv @ wp.vec3((float(kx) + 0.5) * inv_s, (float(ky) + 0.5) * inv_s, 1.0)
        p0 = shear(r.v0, d)
        p1 = shear(r.v1, d)
        p2 = shear(r.v2, d)
        e0 = edge_fn(p1, p2, r.idx[1], r.idx[2])
        e1 = edge_fn(p2, p0, r.idx[2], r.idx[0])
        e2 = edge_fn(p0, p1, r.idx[0], r.idx[1])
        den = e0 + e1 + e2
        b1 = e1 / den
        b2 = e2 / den
        z = (1.0 - b1 - b2) * r.v0[2] + b1 * r.v1[2] + b2 * r.v2[2]
        # inside: each e_i (sign of den) >= -(sheared-space distance of tol at depth z) * |edge|; positive form so
        # NaNs (den == 0, edge-on) are rejected, as in the torch reference
        sg = wp.sign(den)
        t = -r.tol * z
        ok = 0.0
        if den != 0.0:
            if edge_in(e0 * sg, t, p1, p2) and edge_in(e1 * sg, t, p2, p0) and edge_in(e2 * sg, t, p0, p1):
                ok = 1.0
        return wp.vec4(b1, b2, z, ok)

    @wp.func
    def proj(K: wp.mat33, q: wp.vec3) -> wp.vec2:
        h = K @ q
        return wp.vec2(h[0] / h[2], h[1] / h[2])

    @wp.func
    def grow(box: wp.vec4, q: wp.vec2) -> wp.vec4:
        return wp.vec4(wp.min(box[0], q[0]), wp.min(box[1], q[1]), wp.max(box[2], q[0]), wp.max(box[3], q[1]))

    @wp.func
    def clip_edge(box: wp.vec4, a: wp.vec3, b: wp.vec3, near: float, K: wp.mat33) -> wp.vec4:
        # adds vertex a if in front of the near plane, and the edge's crossing of z = near
        out = box
        if a[2] >= near:
            out = grow(out, proj(K, a))
        if (a[2] >= near and b[2] < near) or (a[2] < near and b[2] >= near):
            out = grow(out, proj(K, a + (b - a) * ((near - a[2]) / (b[2] - a[2]))))
        return out

    @wp.func
    def setup(verts: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=int), mask: wp.array2d(dtype=wp.uint8),
              b: int, f: int, K: wp.mat33, kinv: wp.mat33, near: float, far: float, s: int, ws: int, hs: int) -> Tri:
        r = Tri()
        r.ok = 0
        if mask[b, f] == wp.uint8(0):
            return r
        v0 = verts[b, faces[f, 0]]
        v1 = verts[b, faces[f, 1]]
        v2 = verts[b, faces[f, 2]]
        if wp.max(wp.max(v0[2], v1[2]), v2[2]) < near or wp.min(wp.min(v0[2], v1[2]), v2[2]) > far:
            return r
        box = wp.vec4(1e30, 1e30, -1e30, -1e30)
        box = clip_edge(box, v0, v1, near, K)
        box = clip_edge(box, v1, v2, near, K)
        box = clip_edge(box, v2, v0, near, K)
        fs = float(s)
        # sample k sits at (k + 0.5) / s; clamp in float first (huge near-plane projections); the 1-sample margin
        # holds the edge tolerance
        x0 = wp.max(int(wp.ceil(wp.clamp(box[0] * fs - 0.5, -2.0, float(ws + 1)))) - 1, 0)
        y0 = wp.max(int(wp.ceil(wp.clamp(box[1] * fs - 0.5, -2.0, float(hs + 1)))) - 1, 0)
        x1 = wp.min(int(wp.floor(wp.clamp(box[2] * fs - 0.5, -2.0, float(ws + 1)))) + 1, ws - 1)
        y1 = wp.min(int(wp.floor(wp.clamp(box[3] * fs - 0.5, -2.0, float(hs + 1)))) + 1, hs - 1)
        if x0 > x1 or y0 > y1:
            return r
        r = coeffs(v0, v1, v2, faces[f, 0], faces[f, 1], faces[f, 2], kinv, K)
        r.ok = 1
        r.x0 = x0
        r.y0 = y0
        r.x1 = x1
        r.y1 = y1
        return r

    @wp.func
    def raster_range(r: Tri, b: int, f: int, x0: int, y0: int, x1: int, y1: int, inv_s: float, near: float,
                     far: float, mode: int, zbuf: wp.array3d(dtype=float), ibuf: wp.array3d(dtype=int)):
        for ky in range(y0, y1 + 1):
            for kx in range(x0, x1 + 1):
                h = hit(r, kx, ky, inv_s)
                if h[3] != 0.0 and h[2] >= near and h[2] <= far:
                    if mode == 0:
                        wp.atomic_min(zbuf, b, ky, kx, h[2])
                    elif h[2] == zbuf[b, ky, kx]:
                        wp.atomic_min(ibuf, b, ky, kx, f)

    @wp.kernel
    def raster_small(verts: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=int),
                     mask: wp.array2d(dtype=wp.uint8), Ks: wp.array(dtype=wp.mat33),
                     kinvs: wp.array(dtype=wp.mat33), near: float, far: float, s: int, mode: int,
                     zbuf: wp.array3d(dtype=float), ibuf: wp.array3d(dtype=int),
                     queue: wp.array(dtype=int), counters: wp.array(dtype=int)):
        b, f = wp.tid()
        hs = zbuf.shape[1]
        ws = zbuf.shape[2]
        r = setup(verts, faces, mask, b, f, Ks[b], kinvs[b], near, far, s, ws, hs)
        if r.ok == 0:
            return
        nx = r.x1 - r.x0 + 1
        ny = r.y1 - r.y0 + 1
        if nx * ny > big:
            if mode == 0:  # queue for the tiled launch; counters = (queued, max tiles per queued triangle)
                slot = wp.atomic_add(counters, 0, 1)
                queue[slot] = b * faces.shape[0] + f
                wp.atomic_max(counters, 1, ((nx + tile - 1) // tile) * ((ny + tile - 1) // tile))
            return
        raster_range(r, b, f, r.x0, r.y0, r.x1, r.y1, 1.0 / float(s), near, far, mode, zbuf, ibuf)

    @wp.kernel
    def raster_big(verts: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=int),
                   mask: wp.array2d(dtype=wp.uint8), Ks: wp.array(dtype=wp.mat33),
                   kinvs: wp.array(dtype=wp.mat33), near: float, far: float, s: int, mode: int,
                   zbuf: wp.array3d(dtype=float), ibuf: wp.array3d(dtype=int),
                   queue: wp.array(dtype=int), max_tiles: int):
        i = wp.tid()
        item = queue[i // max_tiles]
        t = i % max_tiles
        nf = faces.shape[0]
        b = item // nf
        f = item % nf
        r = setup(verts, faces, mask, b, f, Ks[b], kinvs[b], near, far, s, zbuf.shape[2], zbuf.shape[1])
        tiles_x = (r.x1 - r.x0 + tile) // tile
        tx = r.x0 + (t % tiles_x) * tile
        ty = r.y0 + (t // tiles_x) * tile
        if ty > r.y1:
            return
        raster_range(r, b, f, tx, ty, wp.min(tx + tile - 1, r.x1), wp.min(ty + tile - 1, r.y1), 1.0 / float(s),
                     near, far, mode, zbuf, ibuf)

    @wp.kernel
    def resolve(verts: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=int), attrs: wp.array3d(dtype=float),
                Ks: wp.array(dtype=wp.mat33), kinvs: wp.array(dtype=wp.mat33), s: int, zbuf: wp.array3d(dtype=float),
                ibuf: wp.array3d(dtype=int), out_attr: wp.array4d(dtype=float), out_depth: wp.array3d(dtype=float),
                out_cov: wp.array3d(dtype=float)):
        b, v, u = wp.tid()
        nc = attrs.shape[2]
        w = 1.0 / float(s * s)
        n = int(0)
        zsum = float(0.0)
        for j in range(s):
            for i in range(s):
                ky = v * s + j
                kx = u * s + i
                f = ibuf[b, ky, kx]
                if f != int_max:
                    i0 = faces[f, 0]
                    i1 = faces[f, 1]
                    i2 = faces[f, 2]
                    tri = coeffs(verts[b, i0], verts[b, i1], verts[b, i2], i0, i1, i2, kinvs[b], Ks[b])
                    h = hit(tri, kx, ky, 1.0 / float(s))
                    b0 = 1.0 - h[0] - h[1]
                    for c in range(nc):
                        val = b0 * attrs[b, i0, c] + h[0] * attrs[b, i1, c] + h[1] * attrs[b, i2, c]
                        out_attr[b, v, u, c] = out_attr[b, v, u, c] + w * val
                    zsum += zbuf[b, ky, kx]
                    n += 1
        if n > 0:
            out_depth[b, v, u] = zsum / float(n)
        out_cov[b, v, u] = float(n) * w

    return raster_small, raster_big, resolve


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor, w2c: torch.Tensor,
              K: torch.Tensor, height: int, width: int, settings: RasterSettings = RasterSettings(),
              face_mask: torch.Tensor | None = None) -> RasterOutput:
    """Rasterise B triangle meshes (shared faces) into B views, with perspective-correct attributes.

    No back-face culling; edges are inclusive (tolerance :data:`EDGE_TOL_PX`); triangles crossing the near plane
    render their visible part.

    Args:
        vertices: (B, N, 3) float32 world coordinates.
        faces: (F, 3) int32/int64 vertex indices, shared by all B meshes.
        attributes: (B, N, C) float32 per-vertex attributes (any C).
        w2c: (B, 4, 4) world-to-camera (OpenCV).
        K: (3, 3) or (B, 3, 3) intrinsics, last row [0, 0, 1].
        height: output rows H.
        width: output columns W.
        settings: near/far planes and supersampling.
        face_mask: (B, F) bool, False = face not rendered in that frame; None renders all.

    Returns:
        RasterOutput with attributes (B, H, W, C), depth (B, H, W), coverage (B, H, W), on the inputs' device.

    Raises:
        ValueError: on bad argument shapes, dtypes, devices, indices or settings.
    """
    vertices, faces, attributes, w2c, K, face_mask = validate_inputs(
        vertices, faces, attributes, w2c, K, height, width, settings, face_mask)
    B, F, C, dev, s = vertices.shape[0], faces.shape[0], attributes.shape[2], vertices.device, settings.supersample
    height, width, s = int(height), int(width), int(s)
    if F == 0:
        return empty_output(B, height, width, C, dev)
    wp = _warp()
    raster_small, raster_big, resolve = _kernels()
    verts_cam, K_inv = camera_inputs(vertices, w2c, K)
    mask = (torch.ones(B, F, dtype=torch.uint8, device=dev) if face_mask is None
            else face_mask.to(torch.uint8)).contiguous()
    zbuf = torch.full((B, height * s, width * s), float("inf"), device=dev)
    ibuf = torch.full((B, height * s, width * s), _INT_MAX, dtype=torch.int32, device=dev)
    queue = torch.zeros(B * F, dtype=torch.int32, device=dev)
    counters = torch.zeros(2, dtype=torch.int32, device=dev)
    out = RasterOutput(torch.zeros(B, height, width, C, device=dev), torch.zeros(B, height, width, device=dev),
                       torch.zeros(B, height, width, device=dev))

    faces32, K, attributes = faces.to(torch.int32).contiguous(), K.contiguous(), attributes.contiguous()
    w = {n: wp.from_torch(t, dtype=d) for n, t, d in (
        ("verts", verts_cam, wp.vec3), ("faces", faces32, wp.int32), ("mask", mask, wp.uint8),
        ("K", K, wp.mat33), ("kinv", K_inv, wp.mat33), ("attrs", attributes, wp.float32),
        ("zbuf", zbuf, wp.float32), ("ibuf", ibuf, wp.int32), ("queue", queue, wp.int32),
        ("counters", counters, wp.int32), ("oa", out.attributes, wp.float32), ("od", out.depth, wp.float32),
        ("oc", out.coverage, wp.float32))}
    device = wp.device_from_torch(dev)
    stream = wp.stream_from_torch(dev) if dev.type == "cuda" else None  # order with torch's work
    common = [w["verts"], w["faces"], w["mask"], w["K"], w["kinv"], float(settings.near), float(settings.far), s]
    with wp.ScopedDevice(device), (wp.ScopedStream(stream) if stream is not None else contextlib.nullcontext()):
        for mode in (0, 1):  # 0: depth, 1: face id of the nearest depth
            wp.launch(raster_small, dim=(B, F), inputs=common + [mode, w["zbuf"], w["ibuf"], w["queue"],
                                                                 w["counters"]])
            if mode == 0:
                n_big, max_tiles = (int(x) for x in counters.cpu())
            if n_big > 0:
                wp.launch(raster_big, dim=n_big * max_tiles,
                          inputs=common + [mode, w["zbuf"], w["ibuf"], w["queue"], max_tiles])
        wp.launch(resolve, dim=(B, height, width), inputs=[w["verts"], w["faces"], w["attrs"], w["K"], w["kinv"], s,
                                                           w["zbuf"], w["ibuf"], w["oa"], w["od"], w["oc"]])
    return out
