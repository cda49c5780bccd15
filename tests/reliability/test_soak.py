"""Soak: the reconstruction run 200 times in one process (what a batch job or the web UI does) keeps its memory
flat after a warm-up — no leaked frames, meshes, Warp arrays or file handles."""

from __future__ import annotations

import gc
import os
import resource

import numpy as np

import ex4d

from .corpus import good_depth, good_video, scene

RUNS, WARMUP = 200, 20
MAX_GROWTH_MB = 8  # observed: about 1 MB (allocator noise)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * resource.getpagesize() / 2**20


def _result_mb(result) -> float:
    arrays = [result.color, result.mask, result.depth, result.source.frames]
    tensors = [result.mesh0.vertices, result.mesh0.colors, result.mesh0.faces, result.mesh0.face_valid]
    return (sum(a.nbytes for a in arrays) + sum(t.numel() * t.element_size() for t in tensors)) / 2**20


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_200_reconstructions_do_not_grow_memory(tmp_path):
    # 2 frames of 32×32, read from the files each time (decoder, npz and Warp paths all exercised).
    video, depth = good_video(tmp_path, num_frames=2), good_depth(tmp_path, depth=scene(2)[1])
    cams = ["30", "orbit:angle=60", "180", "zoom_in", "-45"]
    samples, checksum = [], 0
    for i in range(RUNS):
        result = ex4d.recon(video, depth, cam=cams[i % len(cams)], num_frames=2, device="cpu", progress=False)
        checksum += int(result.mask.sum())
        if i == 0:
            footprint_mb = _result_mb(result)
        del result
        if i == WARMUP - 1:
            gc.collect()
            base, base_files = _rss_mb(), _open_files()
        if i >= WARMUP and i % 20 == 19:
            gc.collect()
            samples.append(_rss_mb())
    growth = max(samples) - base
    print(f"soak: {RUNS} reconstructions, RSS after warm-up {base:.0f} MB, max growth {growth:+.1f} MB")
    assert growth < MAX_GROWTH_MB, samples
    # The bound is tight enough to catch the likeliest leak, results (arrays + mesh) kept alive by a cache.
    assert (RUNS - WARMUP) * footprint_mb > MAX_GROWTH_MB
    assert _open_files() <= base_files  # every video container and npz was closed
    # The runs did real work, the same each time a camera repeats.
    assert checksum > 0
    a = ex4d.recon(video, depth, cam="30", num_frames=2, device="cpu", progress=False)
    b = ex4d.recon(video, depth, cam="30", num_frames=2, device="cpu", progress=False)
    assert np.array_equal(a.color, b.color) and np.array_equal(a.mask, b.mask)
