"""Speed of DW-Mesh construction + rendering against the PyAV decode+encode floor.

Usage:
    python bench/recon.py [--device cpu|cuda] [--frames 49] [--sizes 512x512,576x1024] [--json out.json]

For each size (H×W) it measures, on a 49-frame synthetic wall-and-objects scene along preset "180":
  * io_floor_s: decoding the H.264 source with PyAV plus encoding one H.264 video of the same size (the least
    any video-to-video tool must spend);
  * recon_s: ``ex4d.reconstruction`` end to end from decoded frames + depth arrays to uint8 colour/mask arrays
    (host<->device copies included), after one warm-up call that compiles the Warp kernels;
  * on_device_s: mesh build + render with inputs already on the device (GPU: synchronised);
and reports frames per second for each. Numbers are the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ex4d.geometry.conventions import reference_intrinsics
from ex4d.geometry.trajectory import make_trajectory, reference_radius
from ex4d.io.video import Video, load_video, save_video
from ex4d.mesh.build import build_dw_mesh
from ex4d.reconstruction import recon
from ex4d.render.dwmesh import RenderSettings, render_dw_mesh
from ex4d.render.raster import RasterSettings


def synthetic_inputs(num_frames: int, height: int, width: int, seed: int = 0):
    """Frames (T,H,W,3) uint8 and z-depth (T,H,W): a textured wall at 10 with moving boxes and a bump."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = np.full((num_frames, height, width), 10.0, np.float32)
    depth -= 3.0 * (yy / height)  # a floor-like slant towards the bottom
    for t in range(num_frames):
        for k in range(4):
            cx = (0.2 + 0.2 * k) * width + 2.0 * t
            cy = (0.3 + 0.1 * k) * height
            box = (np.abs(xx - cx) < 0.08 * width) & (np.abs(yy - cy) < 0.12 * height)
            depth[t][box] = 3.0 + k
        bump = np.exp(-(((xx - width / 2) / (0.1 * width)) ** 2 + ((yy - 0.7 * height) / (0.1 * height)) ** 2))
        depth[t] -= 2.0 * bump
    tex = np.stack([127 + 120 * np.sin(xx / 7), 127 + 120 * np.cos(yy / 9), 127 + 60 * np.sin((xx + yy) / 13)], -1)
    frames = np.clip(tex[None] + rng.normal(0, 4, (num_frames, height, width, 3)), 0, 255).astype(np.uint8)
    return frames, depth


def median_time(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_size(height: int, width: int, num_frames: int, device: str, repeats: int, batch_size: int) -> dict:
    frames, depth = synthetic_inputs(num_frames, height, width)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.mp4"
        save_video(src, frames, fps=30)
        io_floor = median_time(lambda: save_video(Path(tmp) / "out.mp4", load_video(src, num_frames=None,
                               height=height, width=width).frames, fps=30), repeats, lambda: None)
    video = Video(frames=frames, fps=30.0, source_size=(height, width))
    settings = RenderSettings(raster=RasterSettings())
    run = lambda: recon(video, depth, cam="180", num_frames=None, device=device, batch_size=batch_size,
                        progress=False, render_settings=settings)
    run()  # compiles the Warp kernels
    recon_s = median_time(run, repeats, sync)

    K = reference_intrinsics(height, width).to(dev)
    w2c = make_trajectory("180", num_frames, reference_radius(depth[0])).w2c_tensor(dev)
    depth_d, frames_d = torch.from_numpy(depth).to(dev), torch.from_numpy(frames).to(dev)

    def on_device():
        for s in range(0, num_frames, batch_size):
            sl = slice(s, s + batch_size)
            mesh = build_dw_mesh(depth_d[sl], frames_d[sl], K)
            render_dw_mesh(mesh, w2c[sl], K, settings)

    on_device_s = median_time(on_device, repeats, sync)
    return {
        "size": f"{height}x{width}", "frames": num_frames, "batch_size": batch_size,
        "io_floor_s": round(io_floor, 4), "recon_s": round(recon_s, 4), "on_device_s": round(on_device_s, 4),
        "recon_fps": round(num_frames / recon_s, 1), "on_device_fps": round(num_frames / on_device_s, 1),
        "recon_over_io_floor": round(recon_s / io_floor, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--sizes", default="512x512,576x1024", help="comma-separated HxW")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"
    results = {"device": args.device, "machine": machine, "torch": torch.__version__, "runs": []}
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.lower().split("x"))
        row = bench_size(h, w, args.frames, args.device, args.repeats, args.batch_size)
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}))


if __name__ == "__main__":
    main()
