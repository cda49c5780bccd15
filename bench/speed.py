"""Generation speed modes against the eager baseline, in one process, at the real model sizes with random weights.

Usage (GPU; no weights, no network):
    python bench/speed.py [--configs eager,quality,fbc,taylorseer,distill4] [--frames 49] [--size 512x512]
                          [--steps 25] [--offload none|group] [--fp8] [--memory-cap-gib 24] [--json out.jsonl]
    python bench/speed.py --tiny        # CPU smoke test of the same code path

The pipeline (bench/generate.py's ``build_pipeline``: Wan2.1-I2V-14B sizes, rank-16 LoRA, condition encoder) is
built once; the configurations then run in this order on it, each timed over one full call (CFG 5, the
reference's schedule):

    eager       the reference order: two DiT calls per step, LoRA unfused, PyTorch SDPA, no compile (baseline)
    quality     ex4d's default (ex4d.inpaint.speed): batched CFG, LoRA fused, best attention backend,
                torch.compile of the DiT blocks (a 2-step warm-up call first, so compile time is reported apart)
    cudnn       quality with cuDNN attention instead of the automatic pick (FA4 on Hopper/Blackwell when the
                fa4 extra is installed; the row's speed.attention names quality's backend)
    fbc         quality without compile + FirstBlockCache (--fbc-threshold)    [approximate]
    taylorseer  quality without compile + TaylorSeer (--taylorseer-interval)   [approximate]
    distill4    quality, 4 steps without CFG: the cost of a few-step distilled LoRA fused into the DiT
                (weights are random here: this measures speed only)            [approximate]
    fp8mm       quality + fp8 matmuls in the DiT blocks (torchao; changes the model for the later
                configurations)                                                 [approximate]
    fp8distill4 fp8mm, 4 steps without CFG                                               [approximate]

Prints one JSON line per configuration (stdout; appended to --json) and, at the end, a Markdown table (stderr).
Each row: total_s, encode_s, step_s (median), forward_s (one DiT forward: step_s / 2 with CFG, batched or not),
decode_s, peak_gib, warmup_s (compile), floor_forward_s (the forward's FLOPs at the card's dense bf16 rate,
--peak-tflops, default 790 for an H200/H100 SXM at the boost clock), max_abs_diff vs eager and psnr_vs_eager of
the decoded frames (same seed and inputs), and psnr_vs_quality (the change an approximate mode makes to quality
mode's output; with ``--scene`` over the pixels the model fills, mask 0, only).

``--scene SEED:CAM`` takes the DW-Mesh colour/mask render of a ground-truth scene (bench/fill.py's ``scene_case``:
``ex4d.data.make_scene`` along camera preset CAM, rendered at ``--scene-size``, resized by the pipeline) instead of
random videos; ``--scene-cache FILE.npz`` keeps that render (arrays ``color``, ``mask``) to run it where Warp is
not installed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import load_sibling  # noqa: E402  (also makes ex4d importable)


def forward_flops(t: dict, frames: int, height: int, width: int, text_len: int = 512, image_len: int = 257) -> float:
    """Matmul FLOPs of one DiT forward (batch 1): projections, self/cross attention, FFN, all blocks."""
    d, f, n = t["num_attention_heads"] * t["attention_head_dim"], t["ffn_dim"], t["num_layers"]
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    ctx = text_len + image_len
    per_block = (2 * tokens * d * d * 4          # self-attention q, k, v, o
                 + 2 * 2 * tokens * tokens * d   # QKᵀ and PV
                 + 2 * tokens * d * d * 2        # cross-attention q, o
                 + 2 * ctx * d * d * 2 + 2 * image_len * d * d * 2  # cross k, v (text) + added k, v (image)
                 + 2 * 2 * tokens * ctx * d      # cross QKᵀ and PV
                 + 2 * tokens * d * f * 2)       # FFN
    return n * per_block


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def scene_videos(scene: str, frames: int, size: int, cache: str | None):
    """(colour (T, S, S, 3), mask (T, S, S)) uint8 of a ground-truth scene's DW-Mesh render (see module doc)."""
    if cache and Path(cache).exists():
        with np.load(cache) as data:
            return data["color"], data["mask"]
    fill = load_sibling("fill")
    seed, _, cam = scene.partition(":")
    result, _, _ = fill.scene_case(int(seed), cam or "90", size, frames)
    color, mask = result.color, result.mask.astype(np.uint8) * 255  # ReconResult.mask: bool, True = seen
    if cache:
        np.savez_compressed(cache, color=color, mask=mask)
    return color, mask


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="eager,quality,fbc,taylorseer,distill4")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", default=None, help="HxW (default 512x512; --tiny 32x32)")
    p.add_argument("--offload", choices=("none", "model", "group"), default="none")
    p.add_argument("--fp8", action="store_true", help="fp8 weight storage of the DiT")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="limit this process's GPU memory (torch.cuda.set_per_process_memory_fraction)")
    p.add_argument("--fbc-threshold", type=float, default=0.05)
    p.add_argument("--taylorseer-interval", type=int, default=4)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile in quality mode (default: on CUDA with --offload none)")
    p.add_argument("--peak-tflops", type=float, default=790.0)
    p.add_argument("--scene", default=None, help="inputs: a ground-truth scene's render, SEED:CAM (e.g. 0:90)")
    p.add_argument("--scene-size", type=int, default=256)
    p.add_argument("--scene-cache", default=None, help="npz of the --scene render: read if present, else written")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    gen = load_sibling("generate")
    log = (lambda *a: None) if args.quiet else (lambda msg: print(f"# {msg}", file=sys.stderr, flush=True))
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    cuda = device.type == "cuda"
    if not cuda and not args.tiny:
        p.error("the real sizes need a CUDA device (use --tiny on a CPU)")
    sizes = gen.TINY if args.tiny else gen.REAL
    steps = args.steps or (2 if args.tiny else 25)
    frames = args.frames or (5 if args.tiny else 49)
    height, width = (int(v) for v in (args.size or ("32x32" if args.tiny else "512x512")).lower().split("x"))
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        # fp8mm changes the blocks after a first compile: room for the recompile
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    from ex4d.inpaint.memory import configure_memory
    from ex4d.inpaint.speed import SpeedSettings, configure_speed, parse_cache, uncompile_blocks

    t0 = time.perf_counter()
    pipe = gen.build_pipeline(sizes, device, dtype, args.offload, False, log)
    configure_memory(pipe, device, offload=args.offload, fp8=args.fp8, compute_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - t0
    if cuda and args.memory_cap_gib:
        # After the build (the random weights are made on the GPU, then offloaded): the cap governs the runs.
        gc.collect()
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total),
                                                 torch.cuda.current_device())
    if args.scene:
        color, mask = scene_videos(args.scene, frames, args.scene_size, args.scene_cache)
    else:
        color, mask = gen.synthetic_videos(frames, height, width)
    holes = (mask[..., 0] if mask.ndim == 4 else mask) < 128  # (T, h, w) pixels the model fills
    rows_idx = np.arange(height) * holes.shape[1] // height  # nearest neighbour to the output size
    cols_idx = np.arange(width) * holes.shape[2] // width
    holes = holes[:, rows_idx][:, :, cols_idx]
    floor = forward_flops(sizes["transformer"], frames, height, width) / (args.peak_tflops * 1e12)

    def call(n_steps, cfg):
        return gen.timed_call(pipe, device, color, mask, height=height, width=width, num_frames=frames,
                              num_inference_steps=n_steps, guidance_scale=cfg, seed=0, mask_erode=0)

    rows, reference, quality_out = [], None, None
    quality_ready, fp8_ready, compile_ = False, False, False
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        row = dict(config=name, frames=frames, height=height, width=width, offload=args.offload, fp8=args.fp8,
                   memory_cap_gib=args.memory_cap_gib, build_s=round(build_s, 1), device=gen._env(device)["device"],
                   torch=torch.__version__, floor_forward_s=round(floor, 3))
        try:
            n_steps, cfg = (4, 1.0) if name.endswith("distill4") else (steps, 5.0)
            if name == "eager":
                if quality_ready:
                    raise RuntimeError("eager must run before the quality configurations (compile is not undone)")
                configure_speed(pipe, SpeedSettings(mode="eager"), device)
            else:
                if not quality_ready:
                    compile_ = args.compile if args.compile is not None else (cuda and args.offload == "none")
                    # fp8mm first (e.g. under a 24 GiB cap, where the bf16 DiT never fits): the library's own
                    # path, quality settings + fp8 matmuls in one configure_speed
                    fp8_first = name == "fp8mm"
                    row["speed"] = configure_speed(pipe, SpeedSettings(compile=compile_, fp8_matmul=fp8_first),
                                                   device)
                    quality_ready, fp8_ready = True, fp8_first
                    if compile_:
                        w0 = time.perf_counter()
                        call(2, 5.0)
                        row["warmup_s"] = round(time.perf_counter() - w0, 1)
                if getattr(pipe.transformer, "is_cache_enabled", False):
                    pipe.transformer.disable_cache()
                if name in ("fbc", "taylorseer"):
                    # The cache hooks skip whole blocks from Python: they run on the eager (uncompiled) blocks.
                    row["uncompiled_blocks"] = uncompile_blocks(pipe.transformer)
                    spec = f"fbc:{args.fbc_threshold}" if name == "fbc" else f"taylorseer:{args.taylorseer_interval}"
                    pipe.transformer.enable_cache(parse_cache(spec))
                elif name == "cudnn":
                    # quality with cuDNN attention instead of the automatic pick (FA4 on Hopper when installed);
                    # later configurations keep it. Recompiled, and warmed up apart.
                    from ex4d.inpaint.speed import set_model_attention_backend

                    uncompile_blocks(pipe.transformer)
                    torch._dynamo.reset()
                    row["attention"] = "_native_cudnn" if cuda else "native"
                    set_model_attention_backend(pipe.transformer, row["attention"])
                    if compile_:
                        pipe.transformer.compile_repeated_blocks(fullgraph=True)
                        w0 = time.perf_counter()
                        call(2, 5.0)
                        row["warmup_s"] = round(time.perf_counter() - w0, 1)
                elif name == "fp8mm" and not fp8_ready:
                    # Changes the weights: later configurations keep it. Recompiled, and warmed up apart.
                    from ex4d.inpaint.quantize import enable_fp8_matmuls

                    fp8_ready = True
                    uncompile_blocks(pipe.transformer)
                    row["fp8_layers"] = enable_fp8_matmuls(pipe.transformer, device)
                    if compile_:  # quality mode's choice, also after a cache configuration uncompiled the blocks
                        pipe.transformer.compile_repeated_blocks(fullgraph=True)
                        w0 = time.perf_counter()
                        call(2, 5.0)
                        row["warmup_s"] = round(time.perf_counter() - w0, 1)
                elif name not in ("quality", "cudnn", "distill4", "fp8mm", "fp8distill4"):
                    raise ValueError(f"unknown configuration {name!r}")
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            out, timing = call(n_steps, cfg)
            row.update({k: round(v, 3) for k, v in timing.items()}, steps=n_steps, cfg=cfg)
            row["forward_s"] = round(timing["step_s"] / (2 if cfg > 1 else 1), 3)
            if cuda:
                row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if name == "eager":
                reference = out
            elif reference is not None and reference.shape == out.shape:
                row["max_abs_diff"] = int(np.abs(out.astype(int) - reference.astype(int)).max())
                row["psnr_vs_eager"] = round(_psnr(out, reference), 2)
            if name == "quality":
                quality_out = out
            elif quality_out is not None and quality_out.shape == out.shape and cfg == 5.0:
                row["psnr_vs_quality"] = round(_psnr(out, quality_out), 2)
                if holes.shape == out.shape[:3]:
                    row["psnr_vs_quality_filled"] = round(_psnr(out[holes], quality_out[holes]), 2)
        except Exception as exc:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        gc.collect()
    print(format_table(rows), file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (the columns of BENCHMARKS.md)."""
    cols = [("config", "configuration"), ("total_s", "end to end (s)"), ("step_s", "s / step"),
            ("forward_s", "forward (s)"), ("floor_forward_s", "floor (s)"), ("warmup_s", "compile (s)"),
            ("peak_gib", "peak (GiB)"), ("psnr_vs_eager", "PSNR vs eager"), ("psnr_vs_quality", "PSNR vs quality"),
            ("psnr_vs_quality_filled", "… filled"), ("error", "error")]
    cols = [(k, h) for k, h in cols if any(k in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "–")) for k, _ in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
