"""Geometric benchmark: DW-Mesh vs. the "faces deleted" mesh vs. point splatting on exact synthetic ground truth.

Usage:
    python bench/geometry.py [--seeds 0,1,2] [--presets 30,60,90,180,180_outer] [--size 128x128] [--frames 17]
                             [--methods dw-mesh,dw-mesh-scaled,plain-mesh,points] [--min-angle 2.5] [--device auto]
                             [--json out.json] [--per-scene]

For every scene seed and camera preset it ray-casts the source video with exact depth, re-renders it along the
preset's path with each method and scores the seen-masks of the novel frames (t >= 1) against the ground-truth
observability: leak rate (seen but not visible in the source; the DW-Mesh claim is that it is ~0), recall, IoU,
and PSNR of the colour on the seen pixels. Prints a Markdown table (mean over scenes per method and preset) and a
second one telling where the leaked pixels are; ``--json`` also writes every per-scene row, the configuration and
the machine. See :mod:`ex4d.eval.benchmark`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ex4d.eval.benchmark import METHODS, PRESETS, aggregate, format_leak_table, format_table, geometric_benchmark
from ex4d.mesh.build import MeshSettings
from ex4d.utils.device import resolve_device


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 128x128, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError("size must be at least 8x8")
    return h, w


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def machine_info(device: torch.device) -> dict:
    """What ran the benchmark (for the JSON)."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    try:
        import warp

        info["warp"] = warp.config.version
    except Exception:  # warp is optional for the points method only
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated scene seeds")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated camera presets")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    ap.add_argument("--size", type=_size, default=(128, 128), help="HxW (default 128x128)")
    ap.add_argument("--frames", type=int, default=17, help="frames per video (default 17; t >= 1 are scored)")
    ap.add_argument("--objects", type=int, default=5, help="primitives per scene besides wall and floor")
    ap.add_argument("--min-angle", type=float, default=MeshSettings().min_angle_deg,
                    help="stretched-face angle of the DW-Mesh and plain-mesh, degrees (default: the reference's 2.5)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--json", type=Path, default=None, help="write rows + config + machine here")
    ap.add_argument("--per-scene", action="store_true", help="also print one line per (scene, preset, method)")
    args = ap.parse_args(argv)

    seeds = [int(s) for s in _list(args.seeds)]
    presets, methods = _list(args.presets), _list(args.methods)
    height, width = args.size
    device = resolve_device(args.device)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.per_scene else None
    start = time.perf_counter()
    rows = geometric_benchmark(seeds, presets, methods, height=height, width=width, num_frames=args.frames,
                               device=str(device), num_objects=args.objects,
                               mesh_settings=MeshSettings(min_angle_deg=args.min_angle), log=log)
    wall = time.perf_counter() - start
    print(format_table(rows))
    print()
    print("Where the leaked pixels are (% of each method's leaked pixels; categories overlap):")
    print()
    print(format_leak_table(rows))
    print()
    print(f"{len(seeds)} scenes x {len(presets)} presets x {len(methods)} methods, {height}x{width}, "
          f"{args.frames} frames, min angle {args.min_angle:g}°, device {device}: {wall:.1f} s wall")
    if args.json is not None:
        config = {"seeds": seeds, "presets": presets, "methods": methods, "height": height, "width": width,
                  "num_frames": args.frames, "num_objects": args.objects, "min_angle_deg": args.min_angle,
                  "device": str(device),
                  "metrics_frames": "t >= 1"}
        payload = {"config": config, "machine": machine_info(device), "wall_time_s": wall,
                   "summary": aggregate(rows), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_safe(payload), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
