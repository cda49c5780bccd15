"""The rasteriser's CUDA strategy: each kernel launched once over all frames, big triangles split into tiles.

One thread per (frame, vertex), per (frame, triangle) and per pixel; hits meet in the z-buffer through an int64
``atomic_min``. Triangles with more than ``BIG`` candidate samples are queued by the raster pass and rasterised by a
second launch over (queued triangle, tile), which keeps threads balanced; sizing that launch is the call's one host
sync. Runs on any Warp device: on the CPU it is what tests/render/test_raster.py compares the CPU strategy with
(:data:`ex4d.render.raster._BATCHED_ON_CPU`).
"""

from __future__ import annotations

import contextlib

import torch

from ex4d.render import raster_warp as kw
from ex4d.render.raster_warp import RasterCall, wp

#: Candidate samples above which the raster pass queues a triangle for the tiled launch.
BIG = 256


def rasterize_batched(call: RasterCall) -> None:
    """Rasterise every frame of ``call`` into its outputs (on CUDA, on the torch stream of the tensors' device)."""
    B, N, F, dev = call.B, call.N, call.F, call.torch_device
    cam, scr = (wp.from_torch(torch.empty(B, N, 3, device=dev), dtype=wp.vec3) for _ in range(2))
    keys = wp.from_torch(torch.full((B, call.hs, call.ws), kw.EMPTY_KEY, dtype=torch.int64, device=dev),
                         dtype=wp.int64)
    queue = wp.from_torch(torch.empty(B * F, 2, dtype=torch.int32, device=dev), dtype=wp.vec2i)
    counters_t = torch.zeros(4, dtype=torch.int32, device=dev)
    counters = wp.from_torch(counters_t, dtype=wp.int32)
    unused_bary = wp.empty((1, 1, 1), dtype=wp.vec2, device=call.device)
    stream = wp.stream_from_torch(dev) if dev.type == "cuda" else None  # order with torch's work
    common = [call.K, call.kinv, call.near, call.far, call.s]
    with wp.ScopedDevice(call.device), (wp.ScopedStream(stream) if stream is not None else contextlib.nullcontext()):
        wp.launch(kw.vertex, dim=(B, N), inputs=[call.verts, call.w2c, call.K, call.s, 0, 0, 1, cam, scr])
        wp.launch(kw.raster, dim=(B, F), inputs=[scr, cam, call.faces, call.mask, call.use_mask, *common, 0, 0, 1,
                                                 BIG, keys, unused_bary, 0, queue, counters])
        n_big, max_big, n_huge, max_huge = (int(x) for x in counters_t.cpu())  # the one host sync: sizes these
        # queued triangles: those of at most HUGE_TILES tiles from the queue's front, the others from its back
        for n, first, step, max_tiles in ((n_big, 0, 1, max_big), (n_huge, B * F - 1, -1, max_huge)):
            if n > 0:
                wp.launch(kw.raster_big, dim=n * max_tiles, inputs=[scr, cam, call.faces, *common, 0, keys,
                                                                    unused_bary, queue, first, step, max_tiles])
        wp.launch(kw.resolve, dim=(B, call.height, call.width),
                  inputs=[cam, call.faces, call.attrs, call.K, call.kinv, call.s, 0, 0, 1, keys, unused_bary, 0,
                          *call.outputs])
