"""CPU timing of :func:`ex4d.render.raster.rasterize` on a DW-Mesh-like 512x512 grid (not a test).

Usage:
    python bench/raster_cpu.py [--frames 8] [--size 512] [--supersample 1,2] [--repeats 5] [--device cpu]

Builds one depth-map grid mesh (z ~ 5 with depth steps and noise, unprojected with f = 500, c = (W/2, H/2); the
1-pixel border pushed to z = 100 as in a DW-Mesh, so the border ring becomes huge "skirt" faces; grid triangles
(BL, TL, TR), (BL, TR, BR) per 2x2 block plus 2 cap triangles over the corners at z = 100) and renders it from B
cameras rotated 0-45 deg about the y axis around (0, 0, 5). Prints wall-clock ms/frame (best and median of
--repeats, after a warm-up call that compiles the kernels) and the process CPU time per frame (all threads; steadier
than wall time when the machine is shared).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from ex4d.geometry.conventions import unproject_depth
from ex4d.render.raster import RasterSettings, rasterize


def grid_mesh(size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    H = W = size
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    depth = 5.0 + 0.05 * torch.rand(H, W, generator=g)
    depth[(xx - 0.3 * W).abs() < 0.1 * W] -= 1.5  # depth steps
    depth[((xx - 0.7 * W) ** 2 + (yy - 0.6 * H) ** 2) < (0.12 * W) ** 2] -= 2.5
    depth -= 0.5 * yy / H
    depth[[0, -1], :] = 100.0
    depth[:, [0, -1]] = 100.0
    K = torch.tensor([[500.0, 0.0, W / 2], [0.0, 500.0, H / 2], [0.0, 0.0, 1.0]])
    verts = unproject_depth(depth, K).reshape(-1, 3)
    idx = torch.arange(H * W).reshape(H, W)
    tl, tr, bl, br = (idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(),
                      idx[1:, 1:].flatten())
    c_tl, c_tr, c_bl, c_br = 0, W - 1, (H - 1) * W, H * W - 1
    faces = torch.cat([torch.stack([bl, tl, tr], 1), torch.stack([bl, tr, br], 1),
                       torch.tensor([[c_tr, c_tl, c_br], [c_br, c_tl, c_bl]])])
    colors = torch.cat([torch.rand(H * W, 3, generator=g), torch.ones(H * W, 1)], 1)
    return verts, faces, colors, K


def cameras(B: int, max_deg: float = 45.0, pivot_z: float = 5.0) -> torch.Tensor:
    w2c = []
    for b in range(B):
        a = math.radians(max_deg * b / max(B - 1, 1))
        c, s = math.cos(a), math.sin(a)
        R = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        p = torch.tensor([0.0, 0.0, pivot_z])
        m = torch.eye(4)
        m[:3, :3] = R
        m[:3, 3] = p - R @ p  # rotation about the pivot (0, 0, pivot_z)
        w2c.append(m)
    return torch.stack(w2c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--supersample", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    verts, faces, colors, K = grid_mesh(args.size)
    B = args.frames
    V = verts[None].repeat(B, 1, 1).to(dev)
    A = colors[None].repeat(B, 1, 1).to(dev)
    w2c, K, faces = cameras(B).to(dev), K.to(dev), faces.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"{B} frames {args.size}x{args.size}, {faces.shape[0]} triangles, device {dev}, "
          f"torch threads {torch.get_num_threads()}")
    for s in (int(x) for x in args.supersample.split(",")):
        settings = RasterSettings(supersample=s)
        out = rasterize(V, faces, A, w2c, K, args.size, args.size, settings)  # warm-up (kernel compile)
        sync()
        times, cpu = [], []
        for _ in range(args.repeats):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            out = rasterize(V, faces, A, w2c, K, args.size, args.size, settings)
            sync()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        best, med = min(times) / B * 1e3, statistics.median(times) / B * 1e3
        print(f"supersample {s}: {best:.1f} ms/frame best, {med:.1f} median (process CPU time "
              f"{min(cpu) / B * 1e3:.1f} ms/frame); coverage {out.coverage.mean().item():.4f}, "
              f"depth sum {out.depth.sum().item():.6g}")


if __name__ == "__main__":
    main()
