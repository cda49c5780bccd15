"""The rasteriser's CPU strategy: frames spread over threads, one Warp thread per frame and kernel.

Warp runs a CPU launch on the calling thread with the GIL released, so frames are spread over
``torch.get_num_threads()`` Python threads (the process's ``raster`` pool, :func:`ex4d.utils.warp.cpu_pool`). Each
launch is one Warp thread looping over a whole frame (no per-item launch overhead), in that frame's scratch
buffers: one frame per thread, so the raster pass takes a plain min (no atomics) and keeps the winner's barycentrics
(``store``), and the resolve pass does not re-derive them. Results equal :mod:`ex4d.render.raster_cuda`'s bit for
bit (tests/render/test_raster.py runs both on the CPU).
"""

from __future__ import annotations

import queue

import torch

from ex4d.render import raster_warp as kw
from ex4d.render.raster_warp import RasterCall, wp
from ex4d.utils.warp import cpu_pool

#: A frame runs its triangles in one Warp thread, so the queue of big triangles is never used: no queue size limit.
_NO_QUEUE = 2**31 - 1


def rasterize_frames(call: RasterCall) -> None:
    """Rasterise every frame of ``call`` into its outputs, frames in parallel over the CPU threads."""
    device, N, hs, ws = call.device, call.N, call.hs, call.ws
    unused_queue = wp.empty(1, dtype=wp.vec2i, device=device)
    unused_counters = wp.zeros(4, dtype=int, device=device)
    # Scratch buffers of this call: a worker takes a free set (or makes one), so there are at most as many sets as
    # threads, reused across the call's frames (fresh memory per frame would cost page faults).
    free: queue.SimpleQueue = queue.SimpleQueue()

    def frame(b: int) -> None:
        # frame b: its results go to the outputs' frame b, its scratch to the buffers' frame 0 (offset kb = b)
        try:
            cam, scr, keys, bary = free.get_nowait()
        except queue.Empty:
            cam, scr = (wp.empty((1, N), dtype=wp.vec3, device=device) for _ in range(2))
            keys = wp.empty((1, hs, ws), dtype=wp.int64, device=device)
            bary = wp.empty((1, hs, ws), dtype=wp.vec2, device=device)
        try:
            wp.launch(kw.vertex, dim=(1, 1), inputs=[call.verts, call.w2c, call.K, call.s, b, b, N, cam, scr],
                      device=device)
            wp.launch(kw.clear, dim=(1, hs, 1), inputs=[ws, keys], device=device)
            wp.launch(kw.raster, dim=(1, 1),
                      inputs=[scr, cam, call.faces, call.mask, call.use_mask, call.K, call.kinv, call.near, call.far,
                              call.s, b, b, call.F, _NO_QUEUE, keys, bary, 1, unused_queue, unused_counters],
                      device=device)
            wp.launch(kw.resolve, dim=(1, call.height, 1),
                      inputs=[cam, call.faces, call.attrs, call.K, call.kinv, call.s, b, b, call.width, keys, bary, 1,
                              *call.outputs], device=device)
        finally:
            free.put((cam, scr, keys, bary))

    threads = max(1, min(torch.get_num_threads(), call.B))
    if threads == 1:
        for b in range(call.B):
            frame(b)
    else:
        wp.load_module(kw.vertex.module, device=device)  # compile here, not from several threads
        list(cpu_pool("raster", threads).map(frame, range(call.B)))
