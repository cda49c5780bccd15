"""Triangle rasteriser (NVIDIA Warp, one kernel source for CPU and CUDA): :func:`rasterize`.

The specification is :func:`ex4d.render.torch_ref.rasterize_torch` (ray casting); this module computes the same
thing fast. Conventions are those of :mod:`ex4d.geometry.conventions`: OpenCV camera, pixel (v, u) sampled at
``(u + 0.5, v + 0.5)``, depth = camera z. With ``supersample = s`` pixel (v, u) has s x s samples at
``(u + (i + 0.5) / s, v + (j + 0.5) / s)``.

The parts, each in its own module:

* :mod:`ex4d.render.raster_spec`: settings, output, argument checks, camera inputs (shared with the torch
  reference; re-exported here);
* :mod:`ex4d.render.raster_warp`: the Warp kernels (watertight ray/triangle test, candidate samples, packed
  depth + face-id z-buffer, resolve) and the Warp views of a call's tensors; imported on the first call;
* :mod:`ex4d.render.raster_cpu`: the CPU strategy (frames spread over threads, one Warp thread per frame);
* :mod:`ex4d.render.raster_cuda`: the CUDA strategy (one launch over all frames, atomics, tiled big triangles).

Both strategies run the same kernels, without FMA contraction, and give bit-identical results when run on the same
device (both are run on the CPU by the tests); a GPU-marked test compares a CUDA render with the CPU's.
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

__all__ = ["EDGE_TOL_PX", "RasterOutput", "RasterSettings", "camera_inputs", "empty_output", "rasterize",
           "validate_inputs"]

#: Tests: run the CUDA strategy (batched launches, atomics, tiled queue) on the CPU instead of the CPU's. A switch
#: read at each call, never written by the package.
_BATCHED_ON_CPU = False


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor, w2c: torch.Tensor,
              K: torch.Tensor, height: int, width: int, settings: RasterSettings = RasterSettings(),
              face_mask: torch.Tensor | None = None, *, rgba_u8: tuple | None = None,
              alpha_threshold: float = 0.5) -> RasterOutput:
    """Rasterise B triangle meshes (shared faces) into B views, with perspective-correct attributes.

    No back-face culling; edges are inclusive (tolerance :data:`EDGE_TOL_PX`); triangles crossing the near plane
    render their visible part. On CPU the frames are spread over ``torch.get_num_threads()`` threads; on CUDA the
    call holds one host sync. CPU and CUDA results agree bit for bit (no FMA contraction on either; checked on a GPU
    by tests/render/test_raster_cuda.py).

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
    B = vertices.shape[0]
    F, C, dev = faces.shape[0], attributes.shape[2], vertices.device
    height, width = int(height), int(width)
    if F == 0:
        if rgba_u8 is not None:
            for t in rgba_u8:
                t.zero_()
            return RasterOutput(torch.empty(0, device=dev), rgba_u8[2], torch.empty(0, device=dev))
        return empty_output(B, height, width, C, dev)
    if rgba_u8 is not None:
        if C != 4:
            raise ValueError(f"rgba_u8: expected RGBA attributes (C = 4), got C = {C}")
        for name, t, shape, dtype in (("color", rgba_u8[0], (B, height, width, 3), torch.uint8),
                                      ("seen", rgba_u8[1], (B, height, width), torch.bool),
                                      ("depth", rgba_u8[2], (B, height, width), torch.float32)):
            if tuple(t.shape) != shape or t.dtype != dtype or t.device != dev or not t.is_contiguous():
                raise ValueError(f"rgba_u8 {name}: expected contiguous {shape} {dtype} on {dev}, got "
                                 f"{tuple(t.shape)} {t.dtype} on {t.device}")
        out = RasterOutput(torch.empty(0, device=dev), rgba_u8[2], torch.empty(0, device=dev))
    else:
        out = RasterOutput(torch.empty(B, height, width, C, device=dev), torch.empty(B, height, width, device=dev),
                           torch.empty(B, height, width, device=dev))
    # imported on first use: they import Warp (heavy) and define the kernels
    from ex4d.render.raster_warp import raster_call

    call = raster_call(vertices, faces, attributes, w2c, K, height, width, settings, face_mask, out, rgba_u8,
                       alpha_threshold)
    if dev.type == "cpu" and not _BATCHED_ON_CPU:
        from ex4d.render.raster_cpu import rasterize_frames

        rasterize_frames(call)
    else:
        from ex4d.render.raster_cuda import rasterize_batched

        rasterize_batched(call)
    return out
