"""Step time and peak GPU memory of EX-4D training at the real model sizes, with random weights.

Usage (GPU; no weights, no network; a few synthetic clips are written to a temporary folder):
    python bench/train.py [--steps 5] [--frames 49] [--size 512x512] [--batch-size 1] [--no-checkpointing]
    accelerate launch --config_file configs/accelerate/fsdp.yaml bench/train.py --fsdp     # sharded over the GPUs
    accelerate launch --config_file configs/accelerate/ddp.yaml bench/train.py             # data parallel
    python bench/train.py --tiny          # seconds on a CPU: same code paths, toy sizes

The models are built exactly as bench/generate.py builds them (Wan2.1-I2V-14B configuration on the ``meta`` device,
parameters allocated and randomly initialised on the GPU in bf16; VAE fp32; rank-16 LoRA; condition encoder
16 → 1024 → 5120), then handed to :class:`ex4d.train.trainer.Trainer` (trainable weights fp32, backbone frozen,
gradient checkpointing, AdamW, bf16 autocast through accelerate). One JSON line is printed (main process):

    step_s (median optimizer-step time over steps 2…N: data loading, VAE/CLIP encoding, forward, backward, AdamW),
    first_step_s, peak_gib (torch.cuda.max_memory_allocated over the steps, this process), resident_gib (before
    the first step), trainable_params, num_processes, distributed (NO / MULTI_GPU / FSDP), losses, versions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    import ex4d  # noqa: F401
except ImportError:  # a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _generate_bench():
    """bench/generate.py as a module (its sizes and its random-weight model builder)."""
    path = Path(__file__).resolve().parent / "generate.py"
    spec = importlib.util.spec_from_file_location("ex4d_bench_generate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_GEN = _generate_bench()
REAL, TINY = _GEN.REAL, _GEN.TINY


def trainable_count(sizes: dict) -> int:
    """LoRA (10 linears per block: 8 D×D attention, FFN D→F and F→D) + condition encoder parameters (spec §7.3)."""
    t, r = sizes["transformer"], sizes["lora_rank"]
    d = t["num_attention_heads"] * t["attention_head_dim"]
    f = t["ffn_dim"]
    lora = t["num_layers"] * (8 * r * 2 * d + 2 * r * (d + f))
    e = sizes["encoder"]
    c, h, o = e["in_channels"], e["hidden_channels"], e["out_channels"]
    encoder = (2 * c * h + h) + 2 * (h * h + h) + (h * o * 4 + o)
    return lora + encoder


def write_clips(folder: Path, n: int, frames: int, height: int, width: int) -> Path:
    """``n`` synthetic pairs in the ``ex4d prepare`` layout (random colours, a moving hole)."""
    from ex4d.io.video import save_video

    for i in range(n):
        color, mask = _GEN.synthetic_videos(frames, height, width, seed=i)
        rng = np.random.default_rng(100 + i)
        target = rng.integers(0, 256, color.shape, dtype=np.uint8)
        d = folder / f"clip{i}"
        d.mkdir(parents=True, exist_ok=True)
        save_video(d / "target.mp4", target, fps=15)
        np.savez(d / "pair.npz", mask=mask[..., 0] > 127)
    (folder / "index.jsonl").write_text("".join(json.dumps({"clip": f"clip{i}"}) + "\n" for i in range(n)))
    return folder


def run(args) -> dict:
    from accelerate import Accelerator

    from ex4d.train.config import make_config
    from ex4d.train.trainer import Trainer

    cuda = torch.cuda.is_available() and not args.tiny_cpu
    mixed = "bf16" if cuda else "no"
    accelerator = Accelerator(mixed_precision=mixed, cpu=not cuda)
    device = accelerator.device
    if args.fsdp and accelerator.distributed_type.name != "FSDP":
        raise SystemExit("--fsdp: launch with accelerate launch --config_file configs/accelerate/fsdp.yaml")
    sizes = TINY if args.tiny else REAL
    dtype = torch.bfloat16 if cuda else torch.float32
    height, width = args.size
    row = dict(steps=args.steps, frames=args.frames, height=height, width=width, batch_size=args.batch_size,
               tiny=bool(args.tiny), gradient_checkpointing=not args.no_checkpointing,
               num_processes=accelerator.num_processes, distributed=accelerator.distributed_type.name,
               trainable_params=trainable_count(sizes))
    log = (lambda *a: None) if args.quiet or not accelerator.is_main_process else (
        lambda msg: print(f"# {msg}", file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory() as own_tmp:
        # Every process uses the main process's folder (its clips, its run directory).
        from accelerate.utils import broadcast_object_list

        tmp = Path(broadcast_object_list([own_tmp])[0]) if accelerator.num_processes > 1 else Path(own_tmp)
        data = tmp / "data"
        if accelerator.is_main_process:
            write_clips(data, max(2, accelerator.num_processes * args.batch_size), args.frames, height, width)
        accelerator.wait_for_everyone()
        t0 = time.perf_counter()
        pipe = _GEN.build_pipeline(sizes, device, dtype, "none", False, log)
        cfg = make_config(data=str(data), output_dir=str(tmp / "run"), steps=args.steps, warmup_steps=0, lr=1e-5,
                          batch_size=args.batch_size, num_frames=args.frames, height=height, width=width,
                          weight_dtype="bf16" if cuda else "fp32", mixed_precision=mixed,
                          lora_rank=sizes["lora_rank"], encoder_hidden=sizes["encoder"]["hidden_channels"],
                          gradient_checkpointing=not args.no_checkpointing, mask_erode=0, quiet=True)
        trainer = Trainer(cfg, pipe=pipe, accelerator=accelerator)
        row["build_s"] = round(time.perf_counter() - t0, 2)
        got = sum(p.numel() for p in trainer.params)
        if not trainer.fsdp and got != row["trainable_params"]:
            row["trainable_params_found"] = got
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            row["resident_gib"] = round(torch.cuda.memory_allocated(device) / 2**30, 2)
        times, losses = [], []
        for _ in range(args.steps):
            s = time.perf_counter()
            losses.append(trainer.train_step())
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - s)
            log(f"step {trainer.step}: {times[-1]:.2f} s, loss {losses[-1]:.4f}")
        row.update(first_step_s=round(times[0], 3),
                   step_s=round(statistics.median(times[1:] if len(times) > 1 else times), 3),
                   losses=[round(x, 5) for x in losses])
        if cuda:
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
        accelerator.wait_for_everyone()
    import diffusers

    row.update(torch=torch.__version__, diffusers=diffusers.__version__, python=platform.python_version(),
               device=torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu")
    return row


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps timed (default 5; --tiny: 2)")
    p.add_argument("--frames", type=int, default=None, help="4k+1 frames (default 49; --tiny: 5)")
    p.add_argument("--size", type=_size, default=None, help="HxW (default 512x512; --tiny: 32x32)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--no-checkpointing", action="store_true", help="without gradient checkpointing")
    p.add_argument("--fsdp", action="store_true", help="check that accelerate launched it with an FSDP config")
    p.add_argument("--tiny", action="store_true", help="toy sizes (a CPU smoke test)")
    p.add_argument("--json", default=None, help="also append the JSON line to this file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 5)
    args.frames = args.frames or (5 if args.tiny else 49)
    args.size = args.size or ((32, 32) if args.tiny else (512, 512))
    args.tiny_cpu = bool(args.tiny) and not torch.cuda.is_available()
    if not args.tiny and not torch.cuda.is_available():
        p.error("the real sizes need a CUDA device (use --tiny on a CPU)")
    if (args.frames - 1) % 4 or args.size[0] % 16 or args.size[1] % 16:
        p.error("frames must be 4k+1 and the sides multiples of 16")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        row = run(args)
    except torch.cuda.OutOfMemoryError as exc:
        row = dict(error=f"OutOfMemoryError: {str(exc).splitlines()[0][:300]}")
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 1 if "error" in row else 0


if __name__ == "__main__":
    sys.exit(main())
