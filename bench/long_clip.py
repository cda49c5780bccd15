"""Time and peak memory of ``ex4d run --fill offline`` against the clip's length (issue: clips of any length).

Usage (CPU; no weights, no network):
    python bench/long_clip.py [--size 256] [--frames 49,241] [--cam 90] [--fill offline] [--json out.jsonl]

A 49-frame ground-truth scene (``ex4d.data.make_scene``, as ``ex4d demo``) is played back and forth to each length
(so longer clips have the same content per frame), written as ``input.mp4`` + ``depth.npz``, and run through the
command line in a child process: ``ex4d run --num-frames 0 --cam CAM --fill FILL --quiet``. Each row: seconds,
seconds per frame, the child's peak RSS (``ru_maxrss``) and its growth per frame-pixel over the shortest clip's —
the quantity that must stay near 0 for a clip of any length to run in bounded memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import load_sibling  # noqa: E402,F401  (makes ex4d importable from a checkout)


def scene_clip(size: int, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (T, S, S, 3) uint8, z-depth (T, S, S) float32, K (3, 3)): a 49-frame scene played back and forth."""
    from ex4d.data import default_intrinsics, ground_truth_for_trajectory, make_scene

    scene = make_scene(0, motion_frames=49)
    K = default_intrinsics(size, size).numpy()
    truth = ground_truth_for_trajectory(scene, np.tile(np.eye(4), (49, 1, 1)), K, size, size)
    rgb, depth = np.asarray(truth["source"]["frames"]), np.asarray(truth["source"]["depth"])
    depth = np.where(depth > 0, depth, 1e4).astype(np.float32)
    order = np.concatenate([np.arange(49), np.arange(47, 0, -1)])  # 0..48..1, then again
    idx = order[np.arange(frames) % len(order)]
    return rgb[idx], depth[idx], K


def run_child(argv: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of ``python -m ex4d.cli ARGV``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ex4d.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read()
    if status != 0:
        raise RuntimeError(f"ex4d {' '.join(argv)} failed: {err.strip()[-400:]}")
    return seconds, usage.ru_maxrss * 1024  # kilobytes on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", default="49,241")
    p.add_argument("--cam", default="90")
    p.add_argument("--fill", default="offline", choices=("offline", "none"))
    p.add_argument("--json")
    args = p.parse_args(argv)
    from ex4d.io.atomic import save_npz_atomic
    from ex4d.io.video import save_video

    rows, base = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(f) for f in args.frames.split(",")]:
            rgb, depth, K = scene_clip(args.size, n)
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            save_video(folder / "input.mp4", rgb, fps=15.0)
            save_npz_atomic(folder / "depth.npz", depth=depth, intrinsics=K.astype(np.float32))
            seconds, rss = run_child(["run", "--input-video", str(folder / "input.mp4"), "--depth",
                                      str(folder / "depth.npz"), "--num-frames", "0", "--cam", args.cam, "--fill",
                                      args.fill, "--output-dir", str(folder / "out"), "--device", "cpu", "--quiet"])
            row = {"frames": n, "size": args.size, "cam": args.cam, "fill": args.fill, "seconds": round(seconds, 1),
                   "s_per_frame": round(seconds / n, 3), "peak_rss_gib": round(rss / 2**30, 2)}
            if base is None:
                base = row | {"rss": rss}
            else:
                row["rss_bytes_per_frame_pixel"] = round((rss - base["rss"]) / ((n - base["frames"]) * args.size ** 2), 1)
                row["s_per_frame_vs_first"] = round(row["s_per_frame"] / base["s_per_frame"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
