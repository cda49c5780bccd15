"""The rasteriser's NVIDIA Warp kernels (imported lazily, on the first :func:`ex4d.render.raster.rasterize` call:
importing this module imports Warp and defines the kernels; ``import ex4d`` and ``ex4d.render.raster`` stay light).

Algorithm: every sample's camera ray ``d = K^-1 [x, y, 1]`` (``d_z = 1``) is intersected, with the reference's
own arithmetic, with the triangles that may hold it. The test is watertight (Woop et al. 2013): vertices are
sheared into the ray's frame, ``P = (x - d_x z, y - d_y z)`` (per vertex and ray, the same numbers for every face),
and the barycentrics of the origin are 2D edge functions, each evaluated from its edge's lower vertex index so the
two faces of an edge get bit-exact opposite values. A sample on a shared edge or vertex thus always lands in some
face (Moeller-Trumbore left ~10% of the pixels of a 512^2 depth mesh, re-rendered from its own camera, uncovered).
``z = sum_i b_i z_i`` is the hit's z-depth.

* ``vertex``: one thread per vertex: camera-space position (in float64, as
  :func:`ex4d.render.raster_spec.camera_inputs`) and screen position, once per frame;
* ``raster``: one thread per (frame, triangle). Candidate samples: for a well-shaped triangle in front of the near
  plane, those within ``MARGIN_PX`` of its screen triangle (bbox grown by the margin, then each edge's line pushed
  out by it: a cheap 2D test per sample, or per-row spans for wide triangles), so most triangles of a depth-map mesh
  test none to two samples; for a sliver or a deep triangle, where the reference's tolerance band reaches further
  (beyond needle-sharp corners, or scaled by hit depths extrapolated on grazing triangles), its bbox grown by one
  sample trimmed to ``WIDE_PAD`` samples of the edges; for one crossing the near plane (or with huge screen
  coordinates), every sample of its near-clipped bbox grown by one sample. A candidate already holding a clearly
  nearer hit is skipped (early depth test); the others get the exact test above. A hit packs its depth (positive
  float bits, which order like integers) above its face id into one int64 key, and one ``atomic_min`` keeps the
  nearest hit (exact depth ties: lowest face id) in a single pass; triangles with more than ``big`` candidate
  samples are queued instead, for ``raster_big`` (one thread per (queued triangle, ``TILE`` x ``TILE`` tile));
* ``resolve``: one thread per pixel: the winner's barycentrics average the attributes over the pixel's samples.

Every kernel takes a frame offset and a run length, so one kernel source serves both strategies: one thread per item
over all frames (:mod:`ex4d.render.raster_cuda`) or one thread looping over one whole frame
(:mod:`ex4d.render.raster_cpu`, where the raster pass keeps the winner's barycentrics: ``store``). No FMA contraction
on either device, so every operation rounds alike on CPU and CUDA.

The candidate sets held every sample that the exact test accepts within a triangle's bbox grown by one sample (what
the previous, plain-bbox version of this module tested) on rotated views of 512^2 depth-map meshes: its results are
reproduced bit for bit, at 1/20 (supersample 1) to 1/40 (supersample 2) of its time on 2 CPU cores
(``bench/raster_cpu.py``).

Module state: the kernels, and Warp's options for this module (set below, before they are defined), are registered
in Warp's own module registry when this module is imported; that is all the state there is.
"""

# No `from __future__ import annotations`: Warp evaluates the kernels' annotations.
import math
from dataclasses import dataclass

import torch

from ex4d.render.raster_spec import EDGE_TOL_PX, RasterOutput, RasterSettings, k_inverse
from ex4d.utils.warp import warp_module

wp = warp_module()
# no FMA contraction on CUDA (the CPU build has none): both devices then round every operation alike, so they agree
# bit for bit, and shared-edge ties resolve the same way
wp.set_module_options({"fuse_fp": False, "enable_backward": False}, module=__name__)

# Compile-time constants of the kernels (Warp reads a kernel's global int/float names as constants).
TOL_PX = float(EDGE_TOL_PX)
#: Candidate samples of a well-shaped triangle in front of the near plane: those within this many pixels of its
#: screen projection. 50x EDGE_TOL_PX: covers the tolerance and the float rounding of projections with a wide margin.
MARGIN_PX = 0.05
#: Well-shaped: smallest screen angle at least SHARP_DEG, and farthest vertex at most DEEP_RATIO times the nearest.
#: Other triangles (slivers, deep ones) are where the reference's tolerance band reaches further (beyond needle-sharp
#: corners, or scaled by hit depths extrapolated on grazing triangles): their candidates are the samples of their
#: bbox grown by one sample (as in a plain bbox rasteriser) within WIDE_PAD samples of the screen triangle.
SHARP_DEG = 5.0
SHARP_S2 = math.sin(math.radians(SHARP_DEG)) ** 2
DEEP_RATIO = 4.0
WIDE_PAD = 0.5
#: Screen coordinates (in samples) beyond which projected-triangle bounds are not trusted (float rounding): such
#: triangles, like those crossing the near plane, test every sample of their bbox grown by one sample.
FAST_LIMIT = 2.0**16
#: Early depth test: a sample whose current hit is nearer than this fraction of a triangle's nearest vertex depth
#: skips that triangle's exact test (its hits can only be that near through extrapolation on grazing triangles,
#: seen to reach 1.5% nearer).
ZCULL = 0.9
SPAN_COLS = 6  # candidate columns above which a triangle's rows are trimmed by spans rather than sample by sample
TILE = 16  # tile side, in samples, of raster_big
HUGE_TILES = 64  # queued triangles with more tiles get their own raster_big launch (few: caps, not skirts)
#: z-buffer key of a sample nothing hit (as ``empty_key()``); keys of hits are smaller
EMPTY_KEY = 2**63 - 1


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
    r.pad = MARGIN_PX * fs
    tight = int(0)
    if zlo >= near:
        if wp.max(wp.max(-bx0, bx1), wp.max(-by0, by1)) <= FAST_LIMIT:
            r.trim = 1
            # well-shaped: smallest angle (between the two longest edges) >= SHARP_DEG, and shallow in depth
            e0 = wp.vec2(q1[0] - q0[0], q1[1] - q0[1])
            e1 = wp.vec2(q2[0] - q1[0], q2[1] - q1[1])
            e2 = wp.vec2(q0[0] - q2[0], q0[1] - q2[1])
            l0 = wp.length_sq(e0)
            l1 = wp.length_sq(e1)
            l2 = wp.length_sq(e2)
            area = e0[0] * e1[1] - e0[1] * e1[0]
            if area * area * wp.min(wp.min(l0, l1), l2) >= SHARP_S2 * (l0 * l1 * l2) and area != 0.0:
                if zhi <= DEEP_RATIO * zlo:
                    tight = 1
            if tight == 0:
                r.pad = WIDE_PAD
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
        if x1 - x0 + 1 > SPAN_COLS:
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
    # within the tolerance band: samples already holding a hit nearer than ZCULL times that are skipped
    zcull = pack_key(ZCULL * wp.max(wp.min(wp.min(v0[2], v1[2]), v2[2]), near), 0)
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
def raster(scr: wp.array2d(dtype=wp.vec3), cam: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=wp.int64),
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
    tol = TOL_PX / wp.max(K[0, 0], K[1, 1])
    fs = float(s)
    pow2 = int((s & (s - 1)) == 0)
    nf = faces.shape[0]
    for f in range(t * run, wp.min(t * run + run, nf)):
        if use_mask != 0:
            if not mask[b, f]:
                continue
        i0 = int(faces[f, 0])
        i1 = int(faces[f, 1])
        i2 = int(faces[f, 2])
        r = setup(scr, cam, sb, i0, i1, i2, K, near, far, fs, keys.shape[2], keys.shape[1])
        if r.ok == 0:
            continue
        nx = r.x1 - r.x0 + 1
        ny = r.y1 - r.y0 + 1
        if nx * ny > big:
            # queued for the tiled launches, (item, tiles) from the front if at most HUGE_TILES tiles, else from
            # the back; counters = (front count, front max tiles, back count, back max tiles)
            nt = ((nx + TILE - 1) // TILE) * ((ny + TILE - 1) // TILE)
            if nt <= HUGE_TILES:
                queue[wp.atomic_add(counters, 0, 1)] = wp.vec2i(b * nf + f, nt)
                wp.atomic_max(counters, 1, nt)
            else:
                queue[queue.shape[0] - 1 - wp.atomic_add(counters, 2, 1)] = wp.vec2i(b * nf + f, nt)
                wp.atomic_max(counters, 3, nt)
            continue
        raster_tri(scr, cam, sb, f, i0, i1, i2, r, r.x0, r.y0, r.x1, r.y1, kinv, tol, near, far, fs, pow2,
                   keys, bary, store)


@wp.kernel(enable_backward=False)
def raster_big(scr: wp.array2d(dtype=wp.vec3), cam: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=wp.int64),
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
    i0 = int(faces[f, 0])
    i1 = int(faces[f, 1])
    i2 = int(faces[f, 2])
    K = Ks[b]
    fs = float(s)
    r = setup(scr, cam, sb, i0, i1, i2, K, near, far, fs, keys.shape[2], keys.shape[1])
    tiles_x = (r.x1 - r.x0 + TILE) // TILE
    tx = r.x0 + (t % tiles_x) * TILE
    ty = r.y0 + (t // tiles_x) * TILE
    tol = TOL_PX / wp.max(K[0, 0], K[1, 1])
    raster_tri(scr, cam, sb, f, i0, i1, i2, r, tx, ty, wp.min(tx + TILE - 1, r.x1),
               wp.min(ty + TILE - 1, r.y1), kinvs[b], tol, near, far, fs, int((s & (s - 1)) == 0), keys,
               bary, 0)


@wp.kernel(enable_backward=False)
def resolve(cam: wp.array2d(dtype=wp.vec3), faces: wp.array2d(dtype=wp.int64), attrs: wp.array3d(dtype=float),
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
    tol = TOL_PX / wp.max(K[0, 0], K[1, 1])
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
                    i0 = int(faces[f, 0])
                    i1 = int(faces[f, 1])
                    i2 = int(faces[f, 2])
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


@dataclass(frozen=True)
class RasterCall:
    """One :func:`ex4d.render.raster.rasterize` call as the kernels take it: Warp views of its (validated) tensors,
    its sizes, and the trailing arguments of ``resolve`` (which outputs to write). Built by :func:`raster_call`."""

    device: object  # the Warp device
    torch_device: torch.device  # the tensors' device
    B: int
    N: int
    F: int
    height: int
    width: int
    s: int  # supersampling factor: the z-buffer has (height * s, width * s) samples
    near: float
    far: float
    use_mask: int
    verts: object  # (B, N) vec3 world positions
    w2c: object  # (B,) mat44d
    faces: object  # (F, 3) int64
    mask: object  # (B, F) bool, or (1, 1) when use_mask == 0
    K: object  # (B,) mat33
    kinv: object  # (B,) mat33
    attrs: object  # (B, N, C) float32
    outputs: tuple  # attrs4, use4, out_attr, out_attr4, out_depth, out_cov, u8, thr, out_rgb8, out_seen

    @property
    def hs(self) -> int:
        return self.height * self.s

    @property
    def ws(self) -> int:
        return self.width * self.s


def raster_call(vertices: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor, w2c: torch.Tensor,
                K: torch.Tensor, height: int, width: int, settings: RasterSettings, face_mask: torch.Tensor | None,
                out: RasterOutput, rgba_u8: tuple | None, alpha_threshold: float) -> RasterCall:
    """Warp views of validated inputs (see :func:`ex4d.render.raster_spec.validate_inputs`) and of the outputs.

    Args:
        out: the RasterOutput to fill (its attributes and coverage are unused with ``rgba_u8``).
        rgba_u8: None, or the (color, seen, depth) tensors that ``resolve`` writes instead of float attributes.
    """
    B, N = vertices.shape[:2]
    C, dev = attributes.shape[2], vertices.device
    device = wp.device_from_torch(dev)
    u8 = int(rgba_u8 is not None)
    use_mask = int(face_mask is not None)
    mask = torch.ones(1, 1, dtype=torch.bool, device=dev) if face_mask is None else face_mask
    attributes = attributes.detach().contiguous()
    use4 = int(C == 4)  # RGBA: vec4 views of the attributes, accumulated in registers
    dummy_attr = torch.empty(1, 1, 1, C, device=dev)
    # (wp.from_torch keeps each tensor alive, temporaries included, as long as its view)
    arrays = [(vertices, wp.vec3), (w2c.double(), wp.mat44d), (faces, wp.int64), (mask, wp.bool), (K, wp.mat33),
              (k_inverse(K), wp.mat33), (attributes, wp.float32), (dummy_attr if u8 else out.attributes, wp.float32),
              (out.depth, wp.float32), (torch.empty(1, 1, 1, device=dev) if u8 else out.coverage, wp.float32)]
    verts, w2c_a, faces_a, mask_a, K_a, kinv, attrs, o_attr, o_depth, o_cov = (
        wp.from_torch(t.detach().contiguous(), dtype=d) for t, d in arrays)
    attrs4, o_attr4 = ((wp.from_torch(attributes, dtype=wp.vec4),
                        wp.from_torch(dummy_attr if u8 else out.attributes, dtype=wp.vec4))
                       if use4 else (wp.empty((1, 1), dtype=wp.vec4, device=device),
                                     wp.empty((1, 1, 1), dtype=wp.vec4, device=device)))
    if u8:
        o_rgb8, o_seen = wp.from_torch(rgba_u8[0], dtype=wp.uint8), wp.from_torch(rgba_u8[1], dtype=wp.bool)
    else:
        o_rgb8 = wp.empty((1, 1, 1, 1), dtype=wp.uint8, device=device)
        o_seen = wp.empty((1, 1, 1), dtype=wp.bool, device=device)
    outputs = (attrs4, use4, o_attr, o_attr4, o_depth, o_cov, u8, float(alpha_threshold), o_rgb8, o_seen)
    return RasterCall(device, dev, B, N, faces.shape[0], int(height), int(width), int(settings.supersample),
                      float(settings.near), float(settings.far), use_mask, verts, w2c_a, faces_a, mask_a, K_a, kinv,
                      attrs, outputs)
