"""Quality and speed of the offline fill against plain per-frame inpainting on the ground-truth scenes.

Usage:
    python bench/fill.py [--size 128] [--frames 25] [--seeds 0,1,2] [--cams 30,90,180] [--device cpu]

For each synthetic scene (``ex4d.data.make_scene``, ray-cast exactly) and camera path it reconstructs the render
as ``ex4d demo`` does and fills its "must be generated" pixels three ways:
  * inpaint: plain per-frame push-pull / Laplace inpainting (``ex4d.fill.inpaint``);
  * nb+inpaint: the previous offline fill, ±4 neighbour-frame reprojection then plain inpainting;
  * offline: ``ex4d.fill.offline_fill`` (static-background plate + background-biased inpainting).
It prints PSNR (dB) over the filled pixels of the novel frames (frame 0 is the source view) against the exact
target views, the share of those pixels that reprojection recovered, and each method's seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ex4d.data import default_intrinsics, ground_truth_for_trajectory, make_scene
from ex4d.eval.geometric import masked_psnr
from ex4d.fill import fill_from_background, fill_from_neighbours, inpaint, offline_fill
from ex4d.geometry.trajectory import make_trajectory, reference_radius
from ex4d.io.video import Video
from ex4d.reconstruction import recon


def scene_case(seed: int, cam: str, size: int, frames: int):
    """(ReconResult, source depth (T,H,W), exact target frames (T,H,W,3)) as in ``ex4d demo``."""
    scene = make_scene(seed, motion_frames=max(frames, 17))
    K = default_intrinsics(size, size).numpy()
    first = ground_truth_for_trajectory(scene, np.eye(4)[None], K, size, size)
    trajectory = make_trajectory(cam, frames, reference_radius(first["source"]["depth"][0].numpy()))
    truth = ground_truth_for_trajectory(scene, trajectory.w2c, K, size, size)
    depth = truth["source"]["depth"].numpy()
    depth = np.where(depth > 0, depth, 1e4).astype(np.float32)
    result = recon(Video(truth["source"]["frames"].numpy(), 15.0, (size, size)), depth, cam=trajectory,
                   intrinsics=K, device="cpu", progress=False)
    return result, depth, truth["target"]["frames"].numpy()


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cams", default="30,90,180")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"{args.size}x{args.size}, {args.frames} frames, device {args.device}; PSNR (dB) on filled pixels of "
          "frames 1..T-1")
    print(f"{'scene':>5} {'cam':>4} {'hole%':>6} {'plate%':>7} | {'inpaint':>7} {'nb+inp':>7} {'offline':>7} "
          f"{'gain':>5} | {'s inp':>6} {'s nb+inp':>8} {'s offline':>9}")
    gains = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for cam in args.cams.split(","):
            r, depth, target = scene_case(seed, cam, args.size, args.frames)
            hole = ~r.mask
            hole[0] = False
            plain, t_plain = _timed(lambda: inpaint(r.color, r.mask, device=args.device))

            def old():
                c, f = fill_from_neighbours(r.source.frames, depth, r.source_K, r.trajectory.w2c, r.K, r.color,
                                            r.mask, window=4, device=args.device)
                return inpaint(c, f, device=args.device)

            nb, t_nb = _timed(old)
            new, t_new = _timed(lambda: offline_fill(r, depth, device=args.device))
            _, plate_filled, _ = fill_from_background(r.source.frames, depth, r.source_K, r.trajectory.w2c, r.K,
                                                      r.color, r.mask, r.depth)
            psnr = [masked_psnr(x, target, hole) for x in (plain, nb, new)]
            gains.append(psnr[2] - psnr[0])
            print(f"{seed:>5} {cam:>4} {100 * hole[1:].mean():6.1f} "
                  f"{100 * (plate_filled & hole).sum() / hole.sum():7.1f} | {psnr[0]:7.2f} {psnr[1]:7.2f} "
                  f"{psnr[2]:7.2f} {gains[-1]:+5.2f} | {t_plain:6.2f} {t_nb:8.2f} {t_new:9.2f}", flush=True)
    print(f"mean gain of offline over inpaint: {np.mean(gains):+.2f} dB (min {np.min(gains):+.2f})")


if __name__ == "__main__":
    main()
