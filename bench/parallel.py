"""One video on several GPUs: context-parallel generation timed at the real model sizes with random weights.

Usage (on a machine with N GPUs; no weights, no network):
    torchrun --nproc-per-node N bench/parallel.py [--sizes 49x512x512,81x480x832] [--steps 6] [--mode ulysses]
             [--save-dir DIR] [--json out.jsonl]
    python bench/parallel.py --tiny     # one CPU process, toy sizes (the code path only)

Every rank builds the same random pipeline (bench/generate.py's ``build_pipeline``, same seeds, so identical
weights), runs quality mode without torch.compile (batched CFG, fused LoRA, cuDNN/flash attention) and, when N > 1,
diffusers' context parallelism of the DiT (``ex4d.inpaint.parallel``). For each size rank 0 prints one JSON row:
total_s, encode_s, step_s (median of steps 2…), decode_and_rest_s, projected_25_s (encode + 25·step + decode: the
time of the reference's 25-step run), peak_gib. With ``--save-dir`` the frames are written to
``DIR/frames_<size>_n<N>.npy``; ``--compare-dir`` (a 1-GPU run's save dir) adds max_abs_diff and psnr against it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import load_sibling  # noqa: E402  (also makes ex4d importable)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help="FxHxW list (default 49x512x512,81x480x832; --tiny 5x32x32)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--mode", choices=("ulysses", "ring", "cfg"), default="ulysses")
    p.add_argument("--save-dir", default=None)
    p.add_argument("--compare-dir", default=None)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    gen = load_sibling("generate")

    from ex4d.inpaint.memory import configure_memory
    from ex4d.inpaint.parallel import enable_parallel, init_parallel, shutdown_parallel
    from ex4d.inpaint.speed import SpeedSettings, configure_speed

    world = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = init_parallel(world, None if torch.cuda.is_available() and not args.tiny else "cpu")
    device, cuda = ctx.device, ctx.device.type == "cuda"
    if not cuda and not args.tiny:
        p.error("the real sizes need CUDA devices (use --tiny on a CPU)")
    dtype = torch.bfloat16 if cuda else torch.float32
    log = (lambda msg: print(f"# {msg}", file=sys.stderr, flush=True)) if ctx.is_main else (lambda *a: None)
    t0 = time.perf_counter()
    pipe = gen.build_pipeline(gen.TINY if args.tiny else gen.REAL, device, dtype, "none", False, log)
    configure_memory(pipe, device, offload="none")
    speed = configure_speed(pipe, SpeedSettings(compile=False), device)
    backend = enable_parallel(pipe, ctx, args.mode) if world > 1 else speed["attention"]
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - t0
    sizes = args.sizes or ("5x32x32" if args.tiny else "49x512x512,81x480x832")
    rc = 0
    for size in sizes.split(","):
        frames, height, width = (int(v) for v in size.lower().split("x"))
        color, mask = gen.synthetic_videos(frames, height, width)
        row = dict(gpus=world, mode=args.mode if world > 1 else "none", attention=backend, frames=frames,
                   height=height, width=width, steps=args.steps, build_s=round(build_s, 1),
                   device=gen._env(device)["device"], torch=torch.__version__)
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            out, timing = gen.timed_call(pipe, device, color, mask, height=height, width=width, num_frames=frames,
                                         num_inference_steps=args.steps, guidance_scale=5.0, seed=0, mask_erode=0)
            row.update({k: round(v, 3) for k, v in timing.items()})
            step = timing["step_s"]
            row["projected_25_s"] = round(row["encode_s"] + 25 * step + row["decode_and_rest_s"], 1)
            if cuda:
                row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            name = f"frames_{size}_n{world}.npy"
            if args.save_dir and ctx.is_main:
                Path(args.save_dir).mkdir(parents=True, exist_ok=True)
                np.save(Path(args.save_dir) / name, out)
            ref = Path(args.compare_dir or "") / f"frames_{size}_n1.npy"
            if args.compare_dir and ref.is_file():
                base = np.load(ref)
                diff = out.astype(np.float64) - base.astype(np.float64)
                mse = float(np.mean(diff**2))
                row["max_abs_diff_vs_1gpu"] = int(np.abs(diff).max())
                row["psnr_vs_1gpu"] = round(float("inf") if mse == 0 else 10 * math.log10(255**2 / mse), 2)
        except Exception as exc:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            rc = 1
        if ctx.is_main:
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    shutdown_parallel(ctx)
    return rc


if __name__ == "__main__":
    sys.exit(main())
