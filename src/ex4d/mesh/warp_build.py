"""Fused DW-Mesh construction with NVIDIA Warp (the fast path of :func:`ex4d.mesh.build.build_dw_mesh`).

Computes, bit for bit, what the torch path computes (vertices, RGBA colours, grid-face validity) with three small
kernels and one torch op instead of ~60 whole-image torch ops:

* ``vertices``: per vertex, its camera-space position (the float32 formula of
  :func:`ex4d.geometry.conventions.unproject_depth`, the border pushed to ``border_depth``) and the squared lengths
  of the horizontal, vertical and diagonal grid edges it starts;
* ``torch.sqrt_`` of those: torch's CPU square root (MKL) is not correctly rounded (~15% of float32 results differ
  from IEEE ``sqrtf`` by one ulp), so the norms are taken with torch itself, as the torch path does;
* ``blocks``: per 2x2 block, the validity of its two faces with the arithmetic of
  :func:`ex4d.mesh.filters.grid_min_angle_valid`: same edges, dot products as ``(a0 b0).addcmul_(a1, b1)
  .addcmul_(a2, b2)`` (torch's addcmul is a fused multiply-add: reproduced with ``fmaf``, after checking at run time
  that torch fuses), ``dot > limit * (|a||b| + 1e-12)`` with the threshold's cosine computed by torch and passed in;
* ``colors``: per vertex, the occluder flag (any stretched face touching it, the cap corners) and RGBA.

No FMA contraction otherwise (``fuse_fp`` off; Warp's CPU build has none), so every other operation rounds as
torch's does. On CPU, where a Warp launch runs on the calling thread with the GIL released, frames are spread over
``torch.get_num_threads()`` Python threads, one Warp thread per image row. The two cap faces are left to the caller
(torch); the extent filter is not handled (the caller falls back to the torch path).
"""

# No `from __future__ import annotations`: Warp evaluates the kernels' annotations.
import functools
import threading

import torch

from ex4d.utils.warp import cpu_pool, warp_module

_SCRATCH = threading.local()  # per calling thread: the edge-length buffer, reused across calls (fresh memory of
# this size costs more in page faults than the kernels take)


def _scratch(shape: tuple, dev: torch.device) -> torch.Tensor:
    t = getattr(_SCRATCH, "tensor", None)
    if t is None or t.shape != shape or t.device != dev:
        _SCRATCH.tensor = t = None  # free the old one first
        _SCRATCH.tensor = t = torch.empty(shape, device=dev)
    return t


@functools.lru_cache(maxsize=None)
def _kernels():

    wp = warp_module()
    wp.set_module_options({"fuse_fp": False, "enable_backward": False}, module=__name__)

    @wp.func
    def point(depth: wp.array3d(dtype=wp.float32), b: int, v: int, u: int, H: int, W: int, cam: wp.vec4,
              offset: float, border: float) -> wp.vec3:
        d = depth[b, v, u]
        if v == 0 or v == H - 1 or u == 0 or u == W - 1:
            d = border
        # unproject_depth: x = (u + offset - cx) / fx * d, y = (v + offset - cy) / fy * d
        x = (float(u) + offset - cam[2]) / cam[0] * d
        y = (float(v) + offset - cam[3]) / cam[1] * d
        return wp.vec3(x, y, d)

    # fused multiply-add, rounded once (torch's addcmul is one on CPU and CUDA: see _torch_addcmul_fuses)
    @wp.func_native("#if defined(__CUDA_ARCH__)\nreturn __fmaf_rn(a, b, c);\n#else\nreturn __builtin_fmaf(a, b, c);\n#endif\n")
    def fma(a: float, b: float, c: float) -> float: ...

    @wp.func
    def dot3(a: wp.vec3, b: wp.vec3, fused: int) -> float:
        # grid_min_angle_valid's dot: (a0 b0).addcmul_(a1, b1).addcmul_(a2, b2)
        if fused != 0:
            return fma(a[2], b[2], fma(a[1], b[1], a[0] * b[0]))
        return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]

    @wp.func
    def sharp(dot_ab: float, na: float, nb: float, limit: float, eps: float) -> bool:
        return dot_ab > limit * (na * nb + eps)

    @wp.kernel(enable_backward=False)
    def vertices(depth: wp.array3d(dtype=wp.float32), cams: wp.array(dtype=wp.vec4), offset: float, border: float,
                 fused: int, b0: int, cols: int, verts: wp.array2d(dtype=wp.vec3), sq: wp.array3d(dtype=wp.vec3)):
        # vertex (v, u): position, and the squared lengths of the horizontal, vertical and diagonal (BL -> TR)
        # grid edges indexed by it (the square roots are left to torch, whose sqrt need not be correctly rounded)
        i, v, j = wp.tid()
        b = b0 + i
        H = depth.shape[1]
        W = depth.shape[2]
        cam = cams[b]
        u0 = j * cols
        u1 = wp.min(W, u0 + cols)
        for u in range(u0, u1):
            p = point(depth, b, v, u, H, W, cam, offset, border)
            verts[b, v * W + u] = p
            h2 = float(0.0)
            v2 = float(0.0)
            d2 = float(0.0)
            if u < W - 1:
                e = point(depth, b, v, u + 1, H, W, cam, offset, border) - p
                h2 = dot3(e, e, fused)
                if v < H - 1:
                    e = point(depth, b, v, u + 1, H, W, cam, offset, border) - point(depth, b, v + 1, u, H, W, cam,
                                                                                    offset, border)
                    d2 = dot3(e, e, fused)
            if v < H - 1:
                e = point(depth, b, v + 1, u, H, W, cam, offset, border) - p
                v2 = dot3(e, e, fused)
            sq[b, v, u] = wp.vec3(h2, v2, d2)

    @wp.kernel(enable_backward=False)
    def blocks(verts: wp.array2d(dtype=wp.vec3), norms: wp.array3d(dtype=wp.vec3), limits: wp.array(dtype=wp.float32),
               eps: float, fused: int, b0: int, cols: int, valid: wp.array2d(dtype=wp.bool)):
        # block (v, u): validity of its (BL, TL, TR) and (BL, TR, BR) faces, as grid_min_angle_valid
        i, v, j = wp.tid()
        b = b0 + i
        H = norms.shape[1]
        W = norms.shape[2]
        limit = limits[b]
        bw = W - 1
        nblk = (H - 1) * bw
        u0 = j * cols
        u1 = wp.min(bw, u0 + cols)
        for u in range(u0, u1):
            tl = verts[b, v * W + u]
            tr = verts[b, v * W + u + 1]
            bl = verts[b, (v + 1) * W + u]
            br = verts[b, (v + 1) * W + u + 1]
            top = tr - tl
            bottom = br - bl
            left = bl - tl
            right = br - tr
            diag = tr - bl
            n_tl = norms[b, v, u]
            n_top = n_tl[0]
            n_left = n_tl[1]
            n_d = n_tl[2]
            n_bottom = norms[b, v + 1, u][0]
            n_right = norms[b, v, u + 1][1]
            first = not (sharp(-dot3(left, diag, fused), n_left, n_d, limit, eps)
                         or sharp(dot3(left, top, fused), n_left, n_top, limit, eps)
                         or sharp(dot3(diag, top, fused), n_d, n_top, limit, eps))
            second = not (sharp(dot3(diag, bottom, fused), n_d, n_bottom, limit, eps)
                          or sharp(-dot3(diag, right, fused), n_d, n_right, limit, eps)
                          or sharp(dot3(bottom, right, fused), n_bottom, n_right, limit, eps))
            k = v * bw + u
            valid[b, k] = first
            valid[b, nblk + k] = second

    @wp.kernel(enable_backward=False)
    def colors(frames: wp.array4d(dtype=wp.uint8), lut: wp.array(dtype=wp.float32), valid: wp.array2d(dtype=wp.bool),
               keep: int, cap: int, b0: int, cols: int, out: wp.array2d(dtype=wp.vec4)):
        i, v, j = wp.tid()
        b = b0 + i
        H = frames.shape[1]
        W = frames.shape[2]
        bw = W - 1
        nblk = (H - 1) * bw
        u0 = j * cols
        u1 = wp.min(W, u0 + cols)
        for u in range(u0, u1):
            occ = False
            if keep != 0:
                if v < H - 1 and u < W - 1:  # TL of block (v, u): its first face
                    if not valid[b, v * bw + u]:
                        occ = True
                if v > 0 and u < W - 1:  # BL of block (v - 1, u): both faces
                    k = (v - 1) * bw + u
                    if not (valid[b, k] and valid[b, nblk + k]):
                        occ = True
                if v < H - 1 and u > 0:  # TR of block (v, u - 1): both faces
                    k = v * bw + u - 1
                    if not (valid[b, k] and valid[b, nblk + k]):
                        occ = True
                if v > 0 and u > 0:  # BR of block (v - 1, u - 1): its second face
                    if not valid[b, nblk + (v - 1) * bw + u - 1]:
                        occ = True
                if cap != 0 and (v == 0 or v == H - 1) and (u == 0 or u == W - 1):
                    occ = True
            if occ:
                out[b, v * W + u] = wp.vec4(0.0, 0.0, 0.0, 0.0)
            else:
                out[b, v * W + u] = wp.vec4(lut[int(frames[b, v, u, 0])], lut[int(frames[b, v, u, 1])],
                                            lut[int(frames[b, v, u, 2])], 1.0)

    return wp, vertices, blocks, colors


@functools.lru_cache(maxsize=None)
def _torch_addcmul_fuses(dev: torch.device) -> int:
    """1 if torch's ``addcmul_`` rounds ``self + t1 * t2`` once (an FMA) on this device, 0 if twice, -1 if it
    does neither consistently (vector body vs scalar tail): :func:`build_grid` then declines."""
    a = torch.full((67,), 1 + 2.0**-12, device=dev)  # a * a = 1 + 2^-11 + 2^-24: the 2^-24 is lost unless fused
    c = torch.full((67,), -(1 + 2.0**-11), device=dev)
    r = c.addcmul_(a, a).cpu()
    if (r == 2.0**-24).all():
        return 1
    if (r == 0).all():
        return 0
    return -1


def build_grid(depth: torch.Tensor, frames: torch.Tensor, K: torch.Tensor, limit: torch.Tensor, offset: float,
               border_depth: float, keep: bool, cap: bool):
    """Vertices, colours and grid-face validity of B frames.

    Args:
        depth: (B, H, W) float32 z-depth (H, W >= 2); its border is replaced by ``border_depth``.
        frames: (B, H, W, 3) uint8.
        K: (B, 3, 3) float32 intrinsics.
        limit: (B,) float32 cosine of each frame's angle threshold (computed as the torch path does).
        offset: pixel offset of the vertex sample. border_depth: far-wall depth.
        keep: occluder vertices (touching an invalid grid face) get RGBA 0. cap: the four cap corners do too
            (only with ``keep``), and the validity tensor gets two extra columns (left for the caller).

    Returns:
        (vertices (B, H·W, 3) float32, colors (B, H·W, 4) float32, face_valid (B, 2(H−1)(W−1) [+2]) bool), or
        None where torch's arithmetic cannot be reproduced (the caller then runs the torch path).
    """
    fused = _torch_addcmul_fuses(depth.device)
    if fused < 0:
        return None
    B, H, W = depth.shape
    dev = depth.device
    wp, vertices_k, blocks, colors_k = _kernels()
    device = wp.device_from_torch(dev)
    nblk = (H - 1) * (W - 1)
    verts_t = torch.empty(B, H * W, 3, device=dev)
    colors_t = torch.empty(B, H * W, 4, device=dev)
    valid_t = torch.empty(B, 2 * nblk + (2 if cap else 0), dtype=torch.bool, device=dev)
    cams_t = torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], 1).to(torch.float32).contiguous()
    lut_t = torch.arange(256, dtype=torch.float32, device=dev) / 255.0  # = frames.float() / 255, per value
    depth_a = wp.from_torch(depth.contiguous(), dtype=wp.float32)
    frames_a = wp.from_torch(frames.contiguous(), dtype=wp.uint8)
    cams, limits, lut = (wp.from_torch(t, dtype=d) for t, d in
                         ((cams_t, wp.vec4), (limit.to(torch.float32).contiguous(), wp.float32), (lut_t, wp.float32)))
    verts = wp.from_torch(verts_t, dtype=wp.vec3)
    valid = wp.from_torch(valid_t, dtype=wp.bool)
    out = wp.from_torch(colors_t, dtype=wp.vec4)
    offset, border, eps = float(offset), float(border_depth), float(1e-12)
    keep_i, cap_i = int(keep), int(cap and keep)

    sq_t = _scratch((B, H, W, 3), dev)
    sq = wp.from_torch(sq_t, dtype=wp.vec3)
    steps = (
        (vertices_k, H, W, lambda b, cols: [depth_a, cams, offset, border, fused, b, cols, verts, sq]),
        (blocks, H - 1, W - 1, lambda b, cols: [verts, sq, limits, eps, fused, b, cols, valid]),
        (colors_k, H, W, lambda b, cols: [frames_a, lut, valid, keep_i, cap_i, b, cols, out]),
    )

    def run(steps, b=None):
        for kernel, rows, cols, inputs in steps:
            if b is None:  # GPU: one thread per item
                wp.launch(kernel, dim=(B, rows, cols), inputs=inputs(0, 1), device=device)
            else:  # CPU: frame b, one thread per row
                wp.launch(kernel, dim=(1, rows, 1), inputs=inputs(b, cols), device=device)

    if dev.type == "cpu":
        threads = max(1, min(torch.get_num_threads(), B))
        if threads > 1:
            wp.load_module(blocks.module, device=device)  # compile here, not from several threads
        for part in (steps[:1], None, steps[1:]):
            if part is None:
                sq_t.sqrt_()  # torch's square root (MKL on CPU): the torch path's norms, bit for bit
            elif threads == 1:
                for b in range(B):
                    run(part, b)
            else:
                list(cpu_pool("mesh", threads).map(lambda b: run(part, b), range(B)))
    else:
        stream = wp.stream_from_torch(dev)
        with wp.ScopedDevice(device), wp.ScopedStream(stream):
            run(steps[:1])
            sq_t.sqrt_()
            run(steps[1:])
    return verts_t, colors_t, valid_t
