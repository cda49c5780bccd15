"""Triangle rasteriser (NVIDIA Warp, one kernel source for CPU and CUDA).

The specification is :func:`ex4d.render.torch_ref.rasterize_torch` (ray casting); this module computes the same
thing fast. Conventions are those of :mod:`ex4d.geometry.conventions`: OpenCV camera, pixel (v, u) sampled at
``(u + 0.5, v + 0.5)``, depth = camera z. With ``supersample = s`` pixel (v, u) has s x s samples at
``(u + (i + 0.5) / s, v + (j + 0.5) / s)``.

Algorithm: every sample's camera ray ``d = K^-1 [x, y, 1]`` (``d_z = 1``) is intersected, with the reference's
own arithmetic, with the triangles that may hold it. The test is watertight (Woop et al. 2013): vertices are
sheared into the ray's frame, ``P = (x - d_x z, y - d_y z)`` (per vertex and ray, the same numbers for every face),
and the barycentrics of the origin are 2D edge functions, each evaluated from its edge's lower vertex index so the
two faces of an edge get bit-exact opposite values. A sample on a shared edge or vertex thus always lands in some
face (Moeller-Trumbore left ~10% of the pixels of a 512^2 depth mesh, re-rendered from its own camera, uncovered).
``z = sum_i b_i z_i`` is the hit's z-depth.

* vertex pass: one thread per vertex: camera-space position (in float64, as :func:`camera_inputs`) and screen
  position, once per frame;
* raster pass: one thread per (frame, triangle). Candidate samples: for a well-shaped triangle in front of the near
  plane, those within ``_MARGIN_PX`` of its screen triangle (bbox grown by the margin, then each edge's line pushed
  out by it: a cheap 2D test per sample, or per-row spans for wide triangles), so most triangles of a depth-map mesh
  test none to two samples; for a sliver or a deep triangle, where the reference's tolerance band reaches further
  (beyond needle-sharp corners, or scaled by hit depths extrapolated on grazing triangles), its bbox grown by one
  sample trimmed to ``_WIDE_PAD`` samples of the edges; for one crossing the near plane (or with huge screen
  coordinates), every sample of its near-clipped bbox grown by one sample. A candidate already holding a clearly
  nearer hit is skipped (early depth test); the others get the exact test above. A hit packs its depth (positive
  float bits, which order like integers) above its face id into one int64 key, and one ``atomic_min`` keeps the
  nearest hit (exact depth ties: lowest face id) in a single pass;
* resolve: one thread per pixel: the winner's barycentrics average the attributes over the pixel's samples.

On CUDA, triangles with more than ``_BIG`` candidate samples are queued and rasterised by a second launch over
(queued triangle, 16 x 16 tile), which keeps threads balanced; sizing it is the one host sync. On CPU, where Warp
runs a launch on the calling thread with the GIL released, frames are spread over ``torch.get_num_threads()``
Python threads, each looping over a whole frame per launch in its own scratch buffers; the raster pass keeps the
winner's barycentrics there (a frame has one thread: plain min, no atomics), so the resolve pass does not re-derive
them. No FMA contraction on either device: CPU and CUDA results are bit-identical.

The candidate sets held every sample that the exact test accepts within a triangle's bbox grown by one sample (what
the previous, plain-bbox version of this module tested) on rotated views of 512^2 depth-map meshes: its results are
reproduced bit for bit, at 1/20 (supersample 1) to 1/40 (supersample 2) of its time on 2 CPU cores
(``bench/raster_cpu.py``).
"""

# No `from __future__ import annotations`: Warp evaluates the nested kernels' annotations in their closure.
import contextlib
import functools
import math
import numbers
import threading
import weakref
from dataclasses import dataclass

import torch

from ex4d.geometry.conventions import transform_points
from ex4d.utils.warp import cpu_pool, warp_module

#: Inclusive-edge tolerance, in pixels (at focal max(fx, fy)): a sample this close outside a triangle counts as in.
#: Shared edges/vertices need none (the test is watertight); it settles samples exactly on a mesh's outer border
#: (e.g. a depth-map mesh seen from its own camera), where float32 rounding is ~1e-5 px. Unlike a barycentric
#: tolerance it does not grow with the triangle (huge skirt faces would bleed).
EDGE_TOL_PX = 1e-3
#: Candidate samples of a well-shaped triangle in front of the near plane: those within this many pixels of its
#: screen projection. 50x EDGE_TOL_PX: covers the tolerance and the float rounding of projections with a wide margin.
_MARGIN_PX = 0.05
#: Well-shaped: smallest screen angle at least this, and farthest vertex at most _DEEP_RATIO times the nearest. Other
#: triangles (slivers, deep ones) are where the reference's tolerance band reaches further (beyond needle-sharp
#: corners, or scaled by hit depths extrapolated on grazing triangles): their candidates are the samples of their
#: bbox grown by one sample (as in a plain bbox rasteriser) within _WIDE_PAD samples of the screen triangle.
_SHARP_DEG = 5.0
_DEEP_RATIO = 4.0
_WIDE_PAD = 0.5
#: Screen coordinates (in samples) beyond which projected-triangle bounds are not trusted (float rounding): such
#: triangles, like those crossing the near plane, test every sample of their bbox grown by one sample.
_FAST_LIMIT = 2.0**16
#: Early depth test: a sample whose current hit is nearer than this fraction of a triangle's nearest vertex depth
#: skips that triangle's exact test (its hits can only be that near through extrapolation on grazing triangles,
#: seen to reach 1.5% nearer).
_ZCULL = 0.9
_SPAN_COLS = 6  # candidate columns above which a triangle's rows are trimmed by spans rather than sample by sample
_BIG = 256  # candidate samples above which a triangle is split into tiles (CUDA: keeps threads balanced)
_TILE = 16  # tile side, in samples
_HUGE_TILES = 64  # queued triangles with more tiles get their own launch (few: caps, not skirts)
_INT_MAX = 2**31 - 1
_BATCHED_ON_CPU = False  # tests: run the CUDA code path (batched launches, atomics, tiled queue) on the CPU
_EMPTY_KEY = 2**63 - 1  # z-buffer key of a sample nothing hit


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
def _kernels():
    wp = warp_module()
    # no FMA contraction on CUDA (the CPU build has none): both devices then round every operation alike, so
    # they agree bit for bit, and shared-edge ties resolve the same way
    wp.set_module_options({"fuse_fp": False, "enable_backward": False}, module=__name__)
    tol_px, margin_px, limit, zcull_f = float(EDGE_TOL_PX), float(_MARGIN_PX), float(_FAST_LIMIT), float(_ZCULL)
    sharp_s2, deep_ratio, wide_pad = math.sin(math.radians(_SHARP_DEG)) ** 2, float(_DEEP_RATIO), float(_WIDE_PAD)
    tile, span_cols, huge_tiles = _TILE, _SPAN_COLS, _HUGE_TILES

    # z-buffer key: float bits of the (positive) depth in the high word, face id in the low word; keys order like
    # (depth, face id), so one atomic_min keeps the nearest hit and, on exact depth ties, the lowest face id
    @wp.func_native("union { float f; int i; } u;\nu.f = z;\n"
                    "return (((long long)u.i) << 32) | (long long)(unsigned int)f;")
    def pack_key(z: float, f: int) -> wp.int64: ...

    @wp.func_native("union { float f; int i; } u;\nu.i = (int)(key >> 32);\nreturn u.f;")
    def key_depth(key: wp.int64) -> float: ...

    @wp.func_native("return (int)(key & 0xffffffffLL);")
    def key_face(key: wp.int64) -> int: ...

    @wp.func_native("return 0x7fffffffffffffffLL;")
    def empty_key() -> wp.int64: ...

    @wp.func_native("return key != 0x7fffffffffffffffLL;")
    def key_hit(key: wp.int64) -> bool: ...

    @wp.struct
    class Box:
        ok: int
        trim: int  # 1: in front of the near plane, moderate screen coordinates: candidates trimmed in 2D
        pad: float  # the trim keeps samples within pad (in samples) of each edge's line
        x0: int  # candidate samples, inclusive
        y0: int
        x1: int
        y1: int

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
    def hit(v0: wp.vec3, v1: wp.vec3, v2: wp.vec3, i0: int, i1: int, i2: int, dx: float, dy: float,
            tol: float) -> wp.vec4:
        # (b1, b2, z, ok) of the ray (dx, dy, 1); ok = 1 inside the triangle (inclusive edges). The reference's
        # arithmetic: vertices sheared into the ray's frame, edge functions from the lower vertex index.
        p0 = wp.vec2(v0[0] - dx * v0[2], v0[1] - dy * v0[2])
        p1 = wp.vec2(v1[0] - dx * v1[2], v1[1] - dy * v1[2])
        p2 = wp.vec2(v2[0] - dx * v2[2], v2[1] - dy * v2[2])
        e0 = edge_fn(p1, p2, i1, i2)
        e1 = edge_fn(p2, p0, i2, i0)
        e2 = edge_fn(p0, p1, i0, i1)
        den = e0 + e1 + e2
        b1 = e1 / den
        b2 = e2 / den
        z = (1.0 - b1 - b2) * v0[2] + b1 * v1[2] + b2 * v2[2]
        # inside: each e_i (sign of den) >= -(sheared-space distance of tol at depth z) * |edge|; positive form so
        # NaNs (den == 0, edge-on) are rejected, as in the torch reference
        sg = wp.sign(den)
        t = -tol * z
        ok = 0.0
        if den != 0.0:
            if edge_in(e0 * sg, t, p1, p2) and edge_in(e1 * sg, t, p2, p0) and edge_in(e2 * sg, t, p0, p1):
                ok = 1.0
        return wp.vec4(b1, b2, z, ok)

    @wp.func
    def sample_pos(k: int, fs: float, pow2: int) -> float:
        # continuous image coordinate of sample k, (k + 0.5) / s (a product when s is a power of two: same bits)
        if pow2 != 0:
            return (float(k) + 0.5) * (1.0 / fs)
        return (float(k) + 0.5) / fs

    @wp.func
    def ray_x(kinv: wp.mat33, x: float, y: float) -> float:
        return kinv[0, 0] * x + (kinv[0, 1] * y + kinv[0, 2])

    @wp.func
    def ray_y(kinv: wp.mat33, x: float, y: float) -> float:
        return kinv[1, 0] * x + (kinv[1, 1] * y + kinv[1, 2])

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

    @wp.kernel(enable_backward=False)
    def vertex(verts: wp.array2d(dtype=wp.vec3), w2c: wp.array(dtype=wp.mat44d), Ks: wp.array(dtype=wp.mat33),
               s: int, b0: int, kb: int, run: int, cam: wp.array2d(dtype=wp.vec3), scr: wp.array2d(dtype=wp.vec3)):
        # thread (frame b0 + bi, run t): camera space (float64, as camera_inputs) and screen position in sample
        # units (sample k at k); results in scratch frame b - kb
        bi, t = wp.tid()
        b = b0 + bi
        m = w2c[b]
        K = Ks[b]
        fs = float(s)
        for i in range(t * run, wp.min(t * run + run, verts.shape[1])):
            p = verts[b, i]
            x = wp.float64(p[0])
            y = wp.float64(p[1])
            z = wp.float64(p[2])
            c = wp.vec3(wp.float32(x * m[0, 0] + y * m[0, 1] + z * m[0, 2] + m[0, 3]),
                        wp.float32(x * m[1, 0] + y * m[1, 1] + z * m[1, 2] + m[1, 3]),
                        wp.float32(x * m[2, 0] + y * m[2, 1] + z * m[2, 2] + m[2, 3]))
            cam[b - kb, i] = c
            q = proj(K, c)
            scr[b - kb, i] = wp.vec3(q[0] * fs - 0.5, q[1] * fs - 0.5, c[2])

    @wp.kernel(enable_backward=False)
    def clear(run: int, keys: wp.array3d(dtype=wp.int64)):
        sb, y, t = wp.tid()
        for x in range(t * run, wp.min(t * run + run, keys.shape[2])):
            keys[sb, y, x] = empty_key()

    @wp.func
    def setup(scr: wp.array2d(dtype=wp.vec3), cam: wp.array2d(dtype=wp.vec3), sb: int, i0: int, i1: int, i2: int,
              K: wp.mat33, near: float, far: float, fs: float, ws: int, hs: int) -> Box:
        # candidates: a well-shaped triangle in front of the near plane: within the margin of its screen triangle
        # (bbox grown by it, then trimmed); a sharp or deep one: its bbox grown by one sample, trimmed with a wider
        # pad; one crossing the near plane (or with huge screen coordinates): its near-clipped bbox grown by one
        # sample, untrimmed
        r = Box()
        r.ok = 0
        q0 = scr[sb, i0]
        q1 = scr[sb, i1]
        q2 = scr[sb, i2]
        zlo = wp.min(wp.min(q0[2], q1[2]), q2[2])
        zhi = wp.max(wp.max(q0[2], q1[2]), q2[2])
        if zhi < near or zlo > far:
            return r
        bx0 = wp.min(wp.min(q0[0], q1[0]), q2[0])
        by0 = wp.min(wp.min(q0[1], q1[1]), q2[1])
        bx1 = wp.max(wp.max(q0[0], q1[0]), q2[0])
        by1 = wp.max(wp.max(q0[1], q1[1]), q2[1])
        r.trim = 0
        r.pad = margin_px * fs
        tight = int(0)
        if zlo >= near:
            if wp.max(wp.max(-bx0, bx1), wp.max(-by0, by1)) <= limit:
                r.trim = 1
                # well-shaped: smallest angle (between the two longest edges) >= _SHARP_DEG, and shallow in depth
                e0 = wp.vec2(q1[0] - q0[0], q1[1] - q0[1])
                e1 = wp.vec2(q2[0] - q1[0], q2[1] - q1[1])
                e2 = wp.vec2(q0[0] - q2[0], q0[1] - q2[1])
                l0 = wp.length_sq(e0)
                l1 = wp.length_sq(e1)
                l2 = wp.length_sq(e2)
                area = e0[0] * e1[1] - e0[1] * e1[0]
                if area * area * wp.min(wp.min(l0, l1), l2) >= sharp_s2 * (l0 * l1 * l2) and area != 0.0:
                    if zhi <= deep_ratio * zlo:
                        tight = 1
                if tight == 0:
                    r.pad = wide_pad
        if tight == 1:
            r.x0 = wp.max(int(wp.ceil(bx0 - r.pad)), 0)
            r.y0 = wp.max(int(wp.ceil(by0 - r.pad)), 0)
            r.x1 = wp.min(int(wp.floor(bx1 + r.pad)), ws - 1)
            r.y1 = wp.min(int(wp.floor(by1 + r.pad)), hs - 1)
        else:
            if zlo < near:  # bbox of the visible part: clip each edge at z = near
                v0 = cam[sb, i0]
                v1 = cam[sb, i1]
                v2 = cam[sb, i2]
                box = wp.vec4(1e30, 1e30, -1e30, -1e30)
                box = clip_edge(box, v0, v1, near, K)
                box = clip_edge(box, v1, v2, near, K)
                box = clip_edge(box, v2, v0, near, K)
                bx0 = box[0] * fs - 0.5
                by0 = box[1] * fs - 0.5
                bx1 = box[2] * fs - 0.5
                by1 = box[3] * fs - 0.5
            # clamp in float first (huge near-plane projections)
            r.x0 = wp.max(int(wp.ceil(wp.clamp(bx0, -2.0, float(ws + 1)))) - 1, 0)
            r.y0 = wp.max(int(wp.ceil(wp.clamp(by0, -2.0, float(hs + 1)))) - 1, 0)
            r.x1 = wp.min(int(wp.floor(wp.clamp(bx1, -2.0, float(ws + 1)))) + 1, ws - 1)
            r.y1 = wp.min(int(wp.floor(wp.clamp(by1, -2.0, float(hs + 1)))) + 1, hs - 1)
        if r.x0 <= r.x1 and r.y0 <= r.y1:
            r.ok = 1
        return r

    @wp.func
    def near_side(e: float, l2: float, p2: float) -> bool:
        # e = |edge| * (signed distance to the edge's line, inside positive) >= -pad |edge|; p2 = pad^2, l2 = |edge|^2
        return e >= 0.0 or e * e <= p2 * l2

    @wp.func
    def unit(n: wp.vec2) -> wp.vec2:
        ln = wp.length(n)
        if ln > 0.0:
            return n / ln
        return wp.vec2(0.0, 0.0)

    @wp.func
    def span_lo(lo: float, xa: float, ya: float, nx: float, rnx: float, ny: float, pad: float, y: float) -> float:
        # smallest x with nx (x - xa) + ny (y - ya) >= -pad (unit normal), for nx > 0; rnx = 1 / nx
        if nx > 0.0:
            return wp.max(lo, xa - (pad + ny * (y - ya)) * rnx)
        return lo

    @wp.func
    def span_hi(hi: float, xa: float, ya: float, nx: float, rnx: float, ny: float, pad: float, y: float) -> float:
        # largest x with nx (x - xa) + ny (y - ya) >= -pad, for nx <= 0 (-1 when none: nx == 0, y outside)
        if nx < 0.0:
            return wp.min(hi, xa - (pad + ny * (y - ya)) * rnx)
        if nx == 0.0:
            if ny * (y - ya) < -pad:
                return -1.0
        return hi

    @wp.func
    def raster_tri(scr: wp.array2d(dtype=wp.vec3), cam: wp.array2d(dtype=wp.vec3), sb: int, f: int, i0: int,
                   i1: int, i2: int, r: Box, x0: int, y0: int, x1: int, y1: int, kinv: wp.mat33, tol: float,
                   near: float, far: float, fs: float, pow2: int, keys: wp.array3d(dtype=wp.int64),
                   bary: wp.array3d(dtype=wp.vec2), store: int):
        # candidate samples of rows y0..y1, columns x0..x1; with r.trim, only those within r.pad of every edge's line
        # (the screen triangle with its edges pushed out) get the exact test
        q0 = scr[sb, i0]
        q1 = scr[sb, i1]
        q2 = scr[sb, i2]
        pad = r.pad
        p2 = pad * pad
        e0 = wp.vec2(q1[0] - q0[0], q1[1] - q0[1])
        e1 = wp.vec2(q2[0] - q1[0], q2[1] - q1[1])
        e2 = wp.vec2(q0[0] - q2[0], q0[1] - q2[1])
        sg = float(1.0)
        if e0[0] * e1[1] - e0[1] * e1[0] < 0.0:
            sg = -1.0
        l0 = wp.length_sq(e0)
        l1 = wp.length_sq(e1)
        l2 = wp.length_sq(e2)
        spans = int(0)
        per_sample = int(0)
        u0 = wp.vec2(0.0, 0.0)
        u1 = wp.vec2(0.0, 0.0)
        u2 = wp.vec2(0.0, 0.0)
        r0 = float(0.0)
        r1 = float(0.0)
        r2 = float(0.0)
        if r.trim == 1:
            if x1 - x0 + 1 > span_cols:
                spans = 1
                u0 = unit(wp.vec2(-e0[1] * sg, e0[0] * sg))  # inward unit normals
                u1 = unit(wp.vec2(-e1[1] * sg, e1[0] * sg))
                u2 = unit(wp.vec2(-e2[1] * sg, e2[0] * sg))
                if u0[0] != 0.0:
                    r0 = 1.0 / u0[0]
                if u1[0] != 0.0:
                    r1 = 1.0 / u1[0]
                if u2[0] != 0.0:
                    r2 = 1.0 / u2[0]
            else:
                per_sample = 1
        v0 = cam[sb, i0]
        v1 = cam[sb, i1]
        v2 = cam[sb, i2]
        # early depth test: a hit lies no nearer than the nearest vertex (or the near plane), up to extrapolation
        # within the tolerance band: samples already holding a hit nearer than _ZCULL times that are skipped
        zcull = pack_key(zcull_f * wp.max(wp.min(wp.min(v0[2], v1[2]), v2[2]), near), 0)
        for ky in range(y0, y1 + 1):
            yk = float(ky)
            lo = x0
            hi = x1
            if spans == 1:
                flo = span_lo(float(x0), q0[0], q0[1], u0[0], r0, u0[1], pad, yk)
                flo = span_lo(flo, q1[0], q1[1], u1[0], r1, u1[1], pad, yk)
                flo = span_lo(flo, q2[0], q2[1], u2[0], r2, u2[1], pad, yk)
                fhi = span_hi(float(x1), q0[0], q0[1], u0[0], r0, u0[1], pad, yk)
                fhi = span_hi(fhi, q1[0], q1[1], u1[0], r1, u1[1], pad, yk)
                fhi = span_hi(fhi, q2[0], q2[1], u2[0], r2, u2[1], pad, yk)
                lo = int(wp.ceil(flo))
                hi = int(wp.floor(fhi))
            y = sample_pos(ky, fs, pow2)
            for kx in range(lo, hi + 1):
                if per_sample == 1:
                    xk = float(kx)
                    c0 = sg * (e0[0] * (yk - q0[1]) - e0[1] * (xk - q0[0]))
                    c1 = sg * (e1[0] * (yk - q1[1]) - e1[1] * (xk - q1[0]))
                    c2 = sg * (e2[0] * (yk - q2[1]) - e2[1] * (xk - q2[0]))
                    if not (near_side(c0, l0, p2) and near_side(c1, l1, p2) and near_side(c2, l2, p2)):
                        continue
                if keys[sb, ky, kx] < zcull:
                    continue
                x = sample_pos(kx, fs, pow2)
                h = hit(v0, v1, v2, i0, i1, i2, ray_x(kinv, x, y), ray_y(kinv, x, y), tol)
                if h[3] != 0.0 and h[2] >= near and h[2] <= far:
                    key = pack_key(h[2], f)
                    if store != 0:  # one thread per frame (CPU): plain min, and keep the winner's barycentrics
                        if key < keys[sb, ky, kx]:
                            keys[sb, ky, kx] = key
                            bary[sb, ky, kx] = wp.vec2(h[0], h[1])
                    else:
                        wp.atomic_min(keys, sb, ky, kx, key)

    @wp.kernel(enable_backward=False)
    def raster(scr: wp.array2d(dtype=wp.vec3), cam: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=int),
               mask: wp.array2d(dtype=wp.bool), use_mask: int, Ks: wp.array(dtype=wp.mat33),
               kinvs: wp.array(dtype=wp.mat33), near: float, far: float, s: int, b0: int, kb: int, run: int,
               big: int, keys: wp.array3d(dtype=wp.int64), bary: wp.array3d(dtype=wp.vec2), store: int,
               queue: wp.array(dtype=wp.vec2i), counters: wp.array(dtype=int)):
        # thread (frame b0 + bi, run t of triangles); triangles with more than `big` candidate samples are queued
        bi, t = wp.tid()
        b = b0 + bi
        sb = b - kb
        K = Ks[b]
        kinv = kinvs[b]
        tol = tol_px / wp.max(K[0, 0], K[1, 1])
        fs = float(s)
        pow2 = int((s & (s - 1)) == 0)
        nf = faces.shape[0]
        for f in range(t * run, wp.min(t * run + run, nf)):
            if use_mask != 0:
                if not mask[b, f]:
                    continue
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            r = setup(scr, cam, sb, i0, i1, i2, K, near, far, fs, keys.shape[2], keys.shape[1])
            if r.ok == 0:
                continue
            nx = r.x1 - r.x0 + 1
            ny = r.y1 - r.y0 + 1
            if nx * ny > big:
                # queued for the tiled launches, (item, tiles) from the front if at most huge_tiles tiles, else from
                # the back; counters = (front count, front max tiles, back count, back max tiles)
                nt = ((nx + tile - 1) // tile) * ((ny + tile - 1) // tile)
                if nt <= huge_tiles:
                    queue[wp.atomic_add(counters, 0, 1)] = wp.vec2i(b * nf + f, nt)
                    wp.atomic_max(counters, 1, nt)
                else:
                    queue[queue.shape[0] - 1 - wp.atomic_add(counters, 2, 1)] = wp.vec2i(b * nf + f, nt)
                    wp.atomic_max(counters, 3, nt)
                continue
            raster_tri(scr, cam, sb, f, i0, i1, i2, r, r.x0, r.y0, r.x1, r.y1, kinv, tol, near, far, fs, pow2,
                       keys, bary, store)

    @wp.kernel(enable_backward=False)
    def raster_big(scr: wp.array2d(dtype=wp.vec3), cam: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=int),
                   Ks: wp.array(dtype=wp.mat33), kinvs: wp.array(dtype=wp.mat33), near: float, far: float, s: int,
                   kb: int, keys: wp.array3d(dtype=wp.int64), bary: wp.array3d(dtype=wp.vec2),
                   queue: wp.array(dtype=wp.vec2i), first: int, step: int, max_tiles: int):
        # one thread per (queued triangle, tile of its candidate box): queue[first + step * (i // max_tiles)]
        i = wp.tid()
        item = queue[first + step * (i // max_tiles)]
        t = i % max_tiles
        if t >= item[1]:
            return
        nf = faces.shape[0]
        b = item[0] // nf
        f = item[0] % nf
        sb = b - kb
        i0 = faces[f, 0]
        i1 = faces[f, 1]
        i2 = faces[f, 2]
        K = Ks[b]
        fs = float(s)
        r = setup(scr, cam, sb, i0, i1, i2, K, near, far, fs, keys.shape[2], keys.shape[1])
        tiles_x = (r.x1 - r.x0 + tile) // tile
        tx = r.x0 + (t % tiles_x) * tile
        ty = r.y0 + (t // tiles_x) * tile
        tol = tol_px / wp.max(K[0, 0], K[1, 1])
        raster_tri(scr, cam, sb, f, i0, i1, i2, r, tx, ty, wp.min(tx + tile - 1, r.x1),
                   wp.min(ty + tile - 1, r.y1), kinvs[b], tol, near, far, fs, int((s & (s - 1)) == 0), keys,
                   bary, 0)

    @wp.kernel(enable_backward=False)
    def resolve(cam: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=int), attrs: wp.array3d(dtype=float),
                Ks: wp.array(dtype=wp.mat33), kinvs: wp.array(dtype=wp.mat33), s: int, b0: int, kb: int, run: int,
                keys: wp.array3d(dtype=wp.int64), bary: wp.array3d(dtype=wp.vec2), store: int,
                attrs4: wp.array2d(dtype=wp.vec4), use4: int, out_attr: wp.array4d(dtype=float),
                out_attr4: wp.array3d(dtype=wp.vec4), out_depth: wp.array3d(dtype=float),
                out_cov: wp.array3d(dtype=float), u8: int, thr: float, out_rgb8: wp.array4d(dtype=wp.uint8),
                out_seen: wp.array3d(dtype=wp.bool)):
        # thread (frame b0 + bi, row v, run t of pixels): the winners' barycentrics (kept by the raster pass, or
        # re-derived) interpolate the attributes, averaged over each pixel's samples
        bi, v, t = wp.tid()
        b = b0 + bi
        sb = b - kb
        nc = attrs.shape[2]
        K = Ks[b]
        kinv = kinvs[b]
        tol = tol_px / wp.max(K[0, 0], K[1, 1])
        fs = float(s)
        pow2 = int((s & (s - 1)) == 0)
        w = 1.0 / float(s * s)
        for u in range(t * run, wp.min(t * run + run, out_depth.shape[2])):
            acc = wp.vec4(0.0, 0.0, 0.0, 0.0)  # the attributes when there are 4 (use4: vec4 views)
            if use4 == 0:
                for c in range(nc):
                    out_attr[b, v, u, c] = 0.0
            n = int(0)
            zsum = float(0.0)
            for j in range(s):
                ky = v * s + j
                y = sample_pos(ky, fs, pow2)
                for i in range(s):
                    kx = u * s + i
                    key = keys[sb, ky, kx]
                    if key_hit(key):
                        f = key_face(key)
                        i0 = faces[f, 0]
                        i1 = faces[f, 1]
                        i2 = faces[f, 2]
                        w1 = float(0.0)
                        w2 = float(0.0)
                        if store != 0:
                            bw = bary[sb, ky, kx]
                            w1 = bw[0]
                            w2 = bw[1]
                        else:
                            x = sample_pos(kx, fs, pow2)
                            h = hit(cam[sb, i0], cam[sb, i1], cam[sb, i2], i0, i1, i2, ray_x(kinv, x, y),
                                    ray_y(kinv, x, y), tol)
                            w1 = h[0]
                            w2 = h[1]
                        w0 = 1.0 - w1 - w2
                        if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                            # a sample accepted by the edge tolerance just outside the face (or a near-degenerate
                            # face at extreme depth ratios): clamp onto the face so attributes stay in range
                            w0 = wp.max(w0, 0.0)
                            w1 = wp.max(w1, 0.0)
                            w2 = wp.max(w2, 0.0)
                            tot = w0 + w1 + w2
                            if tot > 0.0:
                                w0 = w0 / tot
                                w1 = w1 / tot
                                w2 = w2 / tot
                            else:
                                w0 = 1.0
                        if use4 != 0:
                            acc = acc + w * (w0 * attrs4[b, i0] + w1 * attrs4[b, i1] + w2 * attrs4[b, i2])
                        else:
                            for c in range(nc):
                                val = w0 * attrs[b, i0, c] + w1 * attrs[b, i1, c] + w2 * attrs[b, i2, c]
                                out_attr[b, v, u, c] = out_attr[b, v, u, c] + w * val
                        zsum += key_depth(key)
                        n += 1
            if u8 != 0:
                # RGBA straight to the video's uint8 colour and mask: seen = alpha > thr, colour × seen, rounded
                # half to even and clamped, exactly as the float path followed by torch's round/clamp/cast
                seen = acc[3] > thr
                out_seen[b, v, u] = seen
                for c in range(3):
                    val = float(0.0)
                    if seen:
                        val = wp.clamp(wp.rint(acc[c] * 255.0), 0.0, 255.0)
                    out_rgb8[b, v, u, c] = wp.uint8(int(val))
            elif use4 != 0:
                out_attr4[b, v, u] = acc
            if n > 0:
                out_depth[b, v, u] = zsum / float(n)
            else:
                out_depth[b, v, u] = 0.0
            if u8 == 0:
                out_cov[b, v, u] = float(n) * w

    return vertex, clear, raster, raster_big, resolve


_SCRATCH = threading.local()  # per thread: the CPU buffers of the frame it works on


def _scratch(wp, N: int, hs: int, ws: int):
    """This thread's buffers for one CPU frame, reused across frames and calls: (cam, scr, keys, bary)."""
    shape = (N, hs, ws)
    if getattr(_SCRATCH, "shape", None) != shape:
        _SCRATCH.shape = None
        tensors = (torch.empty(1, N, 3), torch.empty(1, N, 3), torch.empty(1, hs, ws, dtype=torch.int64),
                   torch.empty(1, hs, ws, 2))
        _SCRATCH.tensors = tensors  # keeps the memory alive
        _SCRATCH.arrays = tuple(wp.from_torch(t, dtype=d)
                                for t, d in zip(tensors, (wp.vec3, wp.vec3, wp.int64, wp.vec2)))
        _SCRATCH.shape = shape
    return _SCRATCH.arrays


_FACES32: list = [None, None]  # (weak reference to the last faces tensor, its int32 copy)


def _faces_int32(faces: torch.Tensor) -> torch.Tensor:
    """``faces`` as int32, converted once per faces tensor (a video's batches share one, see ``grid_faces``)."""
    if faces.dtype == torch.int32:
        return faces
    ref, cached = _FACES32
    if ref is not None and ref() is faces and cached.shape == faces.shape and cached.device == faces.device:
        return cached
    cached = faces.to(torch.int32)
    _FACES32[:] = [weakref.ref(faces), cached]
    return cached


def _k_inverse(K: torch.Tensor) -> torch.Tensor:
    """``K^-1`` exactly as :func:`camera_inputs` computes it (without its host sync on CUDA)."""
    Kd = K.double()
    K_inv = torch.linalg.inv(Kd) if K.device.type == "cpu" else torch.linalg.inv_ex(Kd).inverse
    K_inv[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=K_inv.dtype, device=K_inv.device)  # keeps d_z == 1 exactly
    return K_inv.float().contiguous()


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor, w2c: torch.Tensor,
              K: torch.Tensor, height: int, width: int, settings: RasterSettings = RasterSettings(),
              face_mask: torch.Tensor | None = None, *, rgba_u8: tuple | None = None,
              alpha_threshold: float = 0.5) -> RasterOutput:
    """Rasterise B triangle meshes (shared faces) into B views, with perspective-correct attributes.

    No back-face culling; edges are inclusive (tolerance :data:`EDGE_TOL_PX`); triangles crossing the near plane
    render their visible part. On CPU the frames are spread over ``torch.get_num_threads()`` threads; on CUDA the
    call holds one host sync. CPU and CUDA results are bit-identical.

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
        rgba_u8: for RGBA attributes (C = 4), ``(color (B, H, W, 3) uint8, seen (B, H, W) bool, depth (B, H, W)
            float32)`` contiguous tensors on the inputs' device to write the final frames into (seen = alpha >
            ``alpha_threshold``; colour × seen, rounded half to even, clamped) instead of float attributes: one pass
            instead of five over the frames on the CPU. The returned RasterOutput then holds only ``depth`` (that
            same tensor); its attributes and coverage are empty.

    Returns:
        RasterOutput with attributes (B, H, W, C), depth (B, H, W), coverage (B, H, W), on the inputs' device.

    Raises:
        ValueError: on bad argument shapes, dtypes, devices, indices or settings.
    """
    vertices, faces, attributes, w2c, K, face_mask = validate_inputs(
        vertices, faces, attributes, w2c, K, height, width, settings, face_mask)
    B, N = vertices.shape[:2]
    F, C, dev, s = faces.shape[0], attributes.shape[2], vertices.device, settings.supersample
    height, width, s = int(height), int(width), int(s)
    if F == 0:
        if rgba_u8 is not None:
            for t in rgba_u8:
                t.zero_()
            return RasterOutput(torch.empty(0, device=dev), rgba_u8[2], torch.empty(0, device=dev))
        return empty_output(B, height, width, C, dev)
    wp = warp_module()
    vertex, clear, raster, raster_big, resolve = _kernels()
    device = wp.device_from_torch(dev)
    hs, ws = height * s, width * s
    near, far = float(settings.near), float(settings.far)
    u8 = int(rgba_u8 is not None)
    if u8:
        rgb8, seen8, depth8 = rgba_u8
        if C != 4:
            raise ValueError(f"rgba_u8: expected RGBA attributes (C = 4), got C = {C}")
        for name, t, shape, dtype in (("color", rgb8, (B, height, width, 3), torch.uint8),
                                      ("seen", seen8, (B, height, width), torch.bool),
                                      ("depth", depth8, (B, height, width), torch.float32)):
            if tuple(t.shape) != shape or t.dtype != dtype or t.device != dev or not t.is_contiguous():
                raise ValueError(f"rgba_u8 {name}: expected contiguous {shape} {dtype} on {dev}, got "
                                 f"{tuple(t.shape)} {t.dtype} on {t.device}")
        out = RasterOutput(torch.empty(0, device=dev), depth8, torch.empty(0, device=dev))
    else:
        out = RasterOutput(torch.empty(B, height, width, C, device=dev), torch.empty(B, height, width, device=dev),
                           torch.empty(B, height, width, device=dev))
    use_mask = int(face_mask is not None)
    mask = torch.ones(1, 1, dtype=torch.bool, device=dev) if face_mask is None else face_mask
    attributes = attributes.detach().contiguous()
    use4 = int(C == 4)  # RGBA: vec4 views of the attributes, accumulated in registers
    dummy_attr = torch.empty(1, 1, 1, C, device=dev)
    arrays = [(vertices, wp.vec3), (w2c.double(), wp.mat44d), (_faces_int32(faces), wp.int32), (mask, wp.bool),
              (K, wp.mat33), (_k_inverse(K), wp.mat33), (attributes, wp.float32),
              (dummy_attr if u8 else out.attributes, wp.float32), (out.depth, wp.float32),
              (torch.empty(1, 1, 1, device=dev) if u8 else out.coverage, wp.float32)]
    verts, w2c, faces, mask, K, kinv, attrs, o_attr, o_depth, o_cov = (
        wp.from_torch(t.detach().contiguous(), dtype=d) for t, d in arrays)
    attrs4, o_attr4 = ((wp.from_torch(attributes, dtype=wp.vec4),
                        wp.from_torch(dummy_attr if u8 else out.attributes, dtype=wp.vec4))
                       if use4 else (wp.empty((1, 1), dtype=wp.vec4, device=device),
                                     wp.empty((1, 1, 1), dtype=wp.vec4, device=device)))
    if u8:
        o_rgb8, o_seen = wp.from_torch(rgb8, dtype=wp.uint8), wp.from_torch(seen8, dtype=wp.bool)
    else:
        o_rgb8 = wp.empty((1, 1, 1, 1), dtype=wp.uint8, device=device)
        o_seen = wp.empty((1, 1, 1), dtype=wp.bool, device=device)
    outputs = [attrs4, use4, o_attr, o_attr4, o_depth, o_cov, u8, float(alpha_threshold), o_rgb8, o_seen]

    if dev.type == "cpu" and not _BATCHED_ON_CPU:
        unused_queue, unused_counters = wp.empty(1, dtype=wp.vec2i, device=device), wp.zeros(4, dtype=int,
                                                                                                device=device)

        def frame(b: int):
            # frame b on this thread: one thread per launch looping over all vertices / triangles / pixel rows (no
            # per-item launch overhead), in this thread's scratch buffers (frame index b - b = 0)
            cam, scr, keys, bary = _scratch(wp, N, hs, ws)
            wp.launch(vertex, dim=(1, 1), inputs=[verts, w2c, K, s, b, b, N, cam, scr], device=device)
            wp.launch(clear, dim=(1, hs, 1), inputs=[ws, keys], device=device)
            wp.launch(raster, dim=(1, 1), inputs=[scr, cam, faces, mask, use_mask, K, kinv, near, far, s, b, b, F,
                                                  _INT_MAX, keys, bary, 1, unused_queue, unused_counters],
                      device=device)
            wp.launch(resolve, dim=(1, height, 1), inputs=[cam, faces, attrs, K, kinv, s, b, b, width, keys, bary, 1,
                                                           *outputs], device=device)

        threads = max(1, min(torch.get_num_threads(), B))
        if threads == 1:
            for b in range(B):
                frame(b)
        else:
            wp.load_module(vertex.module, device=device)  # compile here, not from several threads
            list(cpu_pool("raster", threads).map(frame, range(B)))
        return out

    cam, scr = (wp.from_torch(torch.empty(B, N, 3, device=dev), dtype=wp.vec3) for _ in range(2))
    keys = wp.from_torch(torch.full((B, hs, ws), _EMPTY_KEY, dtype=torch.int64, device=dev), dtype=wp.int64)
    queue = wp.from_torch(torch.empty(B * F, 2, dtype=torch.int32, device=dev), dtype=wp.vec2i)
    counters_t = torch.zeros(4, dtype=torch.int32, device=dev)
    counters = wp.from_torch(counters_t, dtype=wp.int32)
    unused_bary = wp.empty((1, 1, 1), dtype=wp.vec2, device=device)
    stream = wp.stream_from_torch(dev) if dev.type == "cuda" else None  # order with torch's work
    with wp.ScopedDevice(device), (wp.ScopedStream(stream) if stream is not None else contextlib.nullcontext()):
        wp.launch(vertex, dim=(B, N), inputs=[verts, w2c, K, s, 0, 0, 1, cam, scr])
        wp.launch(raster, dim=(B, F), inputs=[scr, cam, faces, mask, use_mask, K, kinv, near, far, s, 0, 0, 1, _BIG,
                                              keys, unused_bary, 0, queue, counters])
        n_big, max_big, n_huge, max_huge = (int(x) for x in counters_t.cpu())  # the one host sync: sizes these
        for n, first, step, max_tiles in ((n_big, 0, 1, max_big), (n_huge, B * F - 1, -1, max_huge)):
            if n > 0:
                wp.launch(raster_big, dim=n * max_tiles, inputs=[scr, cam, faces, K, kinv, near, far, s, 0, keys,
                                                                 unused_bary, queue, first, step, max_tiles])
        wp.launch(resolve, dim=(B, height, width), inputs=[cam, faces, attrs, K, kinv, s, 0, 0, 1, keys, unused_bary,
                                                           0, *outputs])
    return out
