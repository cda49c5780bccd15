"""Speed and peak GPU memory of one EX-4D generation at the real model sizes, with random weights.

Usage (GPU; no weights, no network, nothing written to disk):
    python bench/generate.py [--offload none,model,group] [--fp8] [--steps 25] [--frames 49] [--size 512x512]
                             [--group-level block_level|leaf_level] [--attention BACKEND] [--json out.jsonl]
    python bench/generate.py --tiny          # seconds on a CPU: same code paths, toy sizes

The pipeline is the project's ``Ex4dInpaintPipeline`` built from the Wan2.1-I2V-14B-480P configuration
(spec §6.1/§8: DiT 40 layers, dim 5120, 40 heads, FFN 13824, in 36, image_dim 1280, added_kv 5120), the Wan2.1 VAE,
umT5-XXL (24 layers, d_model 4096, d_ff 10240, 64 heads, vocabulary 256384), CLIP ViT-H/14 (32 layers, 1280, 16
heads), the rank-16 LoRA (peft, 400 modules) and the condition encoder (16 → 1024 → 5120). Each model is created
on the ``meta`` device and its parameters are then allocated and randomly initialised directly on the GPU in bf16
(the DiT's fp32 modules, as diffusers keeps them, and the VAE in fp32), so nothing is read from disk; for the
offload modes each model is moved to the CPU right after it is built.

It runs one full generation (CFG 5, the reference's schedule, ``--frames``×H×W, default 49×512×512, 25 steps)
per configuration — every ``--offload`` mode, and each again with fp8 weight storage of the DiT when ``--fp8`` is
given — and prints one JSON line per configuration:

    total_s (the pipeline call: text/CLIP/VAE encoding, denoising, VAE decoding), encode_s (before the first DiT
    call; with model offload it includes moving umT5/CLIP/VAE in), denoise_s, step_s (median of steps 2…N; one
    step = two DiT passes), first_step_s (includes one-off costs and, with model offload, moving the DiT in),
    decode_s (the VAE decode), rest_s (after the last step, besides the decode: uint8 conversion and, with model
    offload, moving the models back out), peak_gib (torch.cuda.max_memory_allocated during the call),
    resident_gib (allocated before the call), build_s, and the device / versions.

On CUDA each configuration runs in its own process (clean allocator and peak counters; an out-of-memory error
ends only that configuration and is reported as ``"error"``). Needs diffusers, transformers, peft, accelerate,
tokenizers; no av/trimesh (``ex4d.io`` is not imported).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    import ex4d  # noqa: F401
except ImportError:  # a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# --------------------------------------------------------------------------------------------- sizes
LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]

REAL = dict(
    transformer=dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                     out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                     qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120,
                     rope_max_seq_len=1024),
    vae=dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True]),
    t5=dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
            relative_attention_num_buckets=32, relative_attention_max_distance=128),
    clip=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
              patch_size=14, projection_dim=1024),
    encoder=dict(in_channels=16, hidden_channels=1024, out_channels=5120),
    lora_rank=16,
)
TINY = dict(
    transformer=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=36,
                     out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
                     qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=32, added_kv_proj_dim=32,
                     rope_max_seq_len=1024),
    vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
             temperal_downsample=[False, True, True]),
    t5=dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=128),
    clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8, projection_dim=16),
    encoder=dict(in_channels=16, hidden_channels=8, out_channels=32),
    lora_rank=4,
)


# --------------------------------------------------------------------------------------------- random weights
def _is_norm(name: str) -> bool:
    """Norm scales (LayerNorm/RMSNorm weights, the VAE's ``gamma``): initialised to one."""
    *_, module, pname = ("." + name).split(".")
    return pname == "gamma" or "norm" in module


@torch.no_grad()
def materialize(module: torch.nn.Module, device, dtype, keep_fp32=(), seed: int = 0) -> torch.nn.Module:
    """Allocate every (meta) parameter on ``device`` with a random init; move buffers. Tied parameters stay tied."""
    gen = torch.Generator(device=device).manual_seed(seed)
    done: dict[int, torch.nn.Parameter] = {}
    for mname, m in module.named_modules():
        for pname, p in list(m._parameters.items()):
            if p is None:
                continue
            if id(p) in done:
                m._parameters[pname] = done[id(p)]
                continue
            full = f"{mname}.{pname}" if mname else pname
            want = dtype
            if not p.is_floating_point():
                want = p.dtype
            elif keep_fp32 and any(k in full.split(".") for k in keep_fp32):
                want = torch.float32
            t = torch.empty(p.shape, device=device, dtype=want)
            if t.is_floating_point():
                if pname == "bias":
                    t.zero_()
                elif _is_norm(full) and t.ndim <= 4:
                    t.fill_(1.0)
                else:
                    fan_in = math.prod(t.shape[1:]) if t.ndim >= 2 else t.shape[0]
                    t.normal_(0.0, fan_in ** -0.5, generator=gen)
            else:
                t.zero_()
            new = torch.nn.Parameter(t, requires_grad=False)
            m._parameters[pname] = done[id(p)] = new
        for bname, b in list(m._buffers.items()):
            if b is not None:
                if b.is_meta:
                    raise RuntimeError(f"buffer {mname}.{bname} is on meta: build with init_empty_weights()")
                m._buffers[bname] = b.to(device)
    return module.eval()


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over the reference prompts (ids < vocab_size): real prompt lengths, no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ex4d.inpaint.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in (DEFAULT_PROMPT + " " + DEFAULT_NEGATIVE_PROMPT).replace(",", " , ").split():
        if len(vocab) < vocab_size:
            vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers import normalizers

    tok.normalizer = normalizers.Lowercase()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_pipeline(sizes: dict, device: torch.device, dtype: torch.dtype, offload: str, fp8: bool, log) -> object:
    """The EX-4D pipeline with random weights, each model built on ``device`` (then moved to the CPU if offloading)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from ex4d.inpaint import lora as lora_mod
    from ex4d.inpaint.condition_encoder import CamVidEncoder
    from ex4d.inpaint.memory import enable_fp8
    from ex4d.inpaint.pipeline import Ex4dInpaintPipeline
    from ex4d.inpaint.schedule import Ex4dFlowMatchScheduler

    park = torch.device("cpu") if offload != "none" else device

    def done(name, model):
        n = sum(p.numel() for p in model.parameters())
        if park != device:
            model.to(park)
        _sync(device)
        log(f"built {name}: {n / 1e6:,.1f} M parameters")
        return model

    with init_empty_weights():
        transformer = WanTransformer3DModel(**sizes["transformer"])
    materialize(transformer, device, dtype, WanTransformer3DModel._keep_in_fp32_modules, seed=1)
    lora_mod.apply_lora(transformer, sizes["lora_rank"])
    with torch.no_grad():
        for m in transformer.modules():
            if lora_mod.ADAPTER_NAME in getattr(m, "lora_B", {}):
                m.lora_B[lora_mod.ADAPTER_NAME].weight.normal_(0.0, 1e-3)
    if fp8:
        enable_fp8(transformer, compute_dtype=dtype)
    transformer = done("transformer (+LoRA)", transformer)

    with init_empty_weights():
        text_encoder = UMT5EncoderModel(UMT5Config(**sizes["t5"], feed_forward_proj="gated-gelu", pad_token_id=0,
                                                   eos_token_id=1, decoder_start_token_id=0))
    materialize(text_encoder, device, dtype, seed=2)
    text_encoder.encoder.embed_tokens.weight = text_encoder.shared.weight  # tied, as from_pretrained leaves them
    text_encoder = done("text_encoder", text_encoder)
    with init_empty_weights():
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**sizes["clip"], hidden_act="gelu", layer_norm_eps=1e-5))
    image_encoder = done("image_encoder", materialize(image_encoder, device, dtype, seed=3))
    with init_empty_weights():
        vae = AutoencoderKLWan(**sizes["vae"], latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD)
    vae = done("vae", materialize(vae, device, torch.float32, seed=4))
    with init_empty_weights():
        encoder = CamVidEncoder(**sizes["encoder"])
    encoder = done("condition_encoder", materialize(encoder, device, dtype, seed=5))

    return Ex4dInpaintPipeline(
        tokenizer=word_tokenizer(sizes["t5"]["vocab_size"]), text_encoder=text_encoder, image_encoder=image_encoder,
        vae=vae, transformer=transformer, scheduler=Ex4dFlowMatchScheduler(shift=5.0), condition_encoder=encoder,
    )


def synthetic_videos(num_frames: int, height: int, width: int, seed: int = 0):
    """(colour, mask) uint8 (T, H, W, 3): random colours under a moving hole; frame 0 fully seen."""
    rng = np.random.default_rng(seed)
    color = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    mask = np.full((num_frames, height, width, 3), 255, dtype=np.uint8)
    for t in range(1, num_frames):
        x0 = (t * width // (2 * num_frames)) % (width // 2)
        mask[t, height // 4: 3 * height // 4, x0: x0 + width // 3] = 0
    return color * (mask > 127), mask


# --------------------------------------------------------------------------------------------- one configuration
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(pipe, device: torch.device, color, mask, **kwargs) -> tuple[np.ndarray, dict]:
    """One ``pipe(color, mask, **kwargs)`` call (uint8 frames out), timed with device syncs at the first DiT call,
    after every step and around the VAE decode: (frames, {total_s, encode_s, denoise_s, first_step_s,
    step_s = median of steps 2…, decode_and_rest_s, decode_s, rest_s})."""
    marks: dict = {"dit": None, "steps": []}

    def first_dit(module, inputs):
        if marks["dit"] is None:
            _sync(device)
            marks["dit"] = time.perf_counter()

    def on_step(p, i, t, kw):
        _sync(device)
        marks["steps"].append(time.perf_counter())
        return kw

    vae_decode, own = pipe.vae_decode, pipe.__dict__.get("vae_decode")

    def timed_decode(latents):
        _sync(device)
        marks["decode0"] = time.perf_counter()
        out = vae_decode(latents)
        _sync(device)
        marks["decode1"] = time.perf_counter()
        return out

    pipe.vae_decode = timed_decode  # (instance attribute: only this pipeline, only this call)
    handle = pipe.transformer.register_forward_pre_hook(first_dit)
    try:
        _sync(device)
        start = time.perf_counter()
        frames = pipe(color, mask, output_type="np", callback_on_step_end=on_step, **kwargs).frames
        _sync(device)
        end = time.perf_counter()
    finally:
        handle.remove()
        if own is None:
            del pipe.vae_decode  # back to the class's method
        else:
            pipe.vae_decode = own
    per_step = np.diff([marks["dit"]] + marks["steps"]).tolist()
    decode_s = marks["decode1"] - marks["decode0"]
    return frames, dict(total_s=end - start, encode_s=marks["dit"] - start,
                        denoise_s=marks["steps"][-1] - marks["dit"], first_step_s=per_step[0],
                        step_s=statistics.median(per_step[1:] if len(per_step) > 1 else per_step),
                        decode_and_rest_s=end - marks["steps"][-1], decode_s=decode_s,
                        rest_s=end - marks["steps"][-1] - decode_s)


def run_one(args, offload: str, fp8: bool, log) -> dict:
    from ex4d.inpaint.memory import configure_memory

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    sizes = TINY if args.tiny else REAL
    height, width = args.size
    row = dict(offload=offload, fp8=fp8, group_level=args.group_level if offload == "group" else None,
               steps=args.steps, frames=args.frames, height=height, width=width, cfg=args.cfg,
               tiny=bool(args.tiny), dtype=str(dtype).replace("torch.", ""))
    try:
        t0 = time.perf_counter()
        pipe = build_pipeline(sizes, device, dtype, offload, fp8, log)
        configure_memory(pipe, device, offload=offload, fp8=False, group_offload_type=args.group_level,
                         num_blocks_per_group=args.blocks_per_group)
        if args.attention:
            pipe.transformer.set_attention_backend(args.attention)
        pipe.set_progress_bar_config(disable=True)
        gc.collect()
        _sync(device)
        row["build_s"] = round(time.perf_counter() - t0, 2)
        color, mask = synthetic_videos(args.frames, height, width)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            row["resident_gib"] = round(torch.cuda.memory_allocated(device) / 2**30, 2)
        frames, timing = timed_call(pipe, device, color, mask, height=height, width=width, num_frames=args.frames,
                                    num_inference_steps=args.steps, guidance_scale=args.cfg, seed=0, mask_erode=0)
        row.update({k: round(timing[k], 3) for k in ("total_s", "encode_s", "denoise_s", "first_step_s", "step_s",
                                                      "decode_s", "rest_s")},
                   output_shape=list(frames.shape))
        if cuda:
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    except Exception as exc:  # noqa: BLE001 - report and go on with the next configuration
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    row.update(_env(device))
    return row


def _env(device: torch.device) -> dict:
    import diffusers
    import transformers

    env = dict(torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__,
               python=platform.python_version())
    env["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return env


# --------------------------------------------------------------------------------------------- driver
def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--offload", default="none", help="comma-separated: none,model,group")
    p.add_argument("--fp8", action="store_true", help="also run each offload mode with fp8 DiT weight storage")
    p.add_argument("--fp8-only", action="store_true", help="run only the fp8 variants")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 25; --tiny: 2)")
    p.add_argument("--frames", type=int, default=None, help="4k+1 frames (default 49; --tiny: 5)")
    p.add_argument("--size", type=_size, default=None, help="HxW, multiples of 16 (default 512x512; --tiny: 32x32)")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--group-level", choices=("block_level", "leaf_level"), default="block_level")
    p.add_argument("--blocks-per-group", type=int, default=1)
    p.add_argument("--attention", default=None, help="diffusers attention backend for the DiT (default: native SDPA)")
    p.add_argument("--device", default=None, help="default: cuda if available (else cpu, --tiny only)")
    p.add_argument("--tiny", action="store_true", help="toy sizes: a smoke test that runs on a CPU in seconds")
    p.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                   help="one process per configuration (auto: on CUDA)")
    p.add_argument("--json", default=None, help="also append the JSON lines to this file")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 25)
    args.frames = args.frames or (5 if args.tiny else 49)
    args.size = args.size or ((32, 32) if args.tiny else (512, 512))
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    modes = [m.strip() for m in args.offload.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("none", "model", "group")]
    if bad or not modes:
        p.error(f"--offload takes none, model, group; got {args.offload!r}")
    if torch.device(args.device).type != "cuda" and not args.tiny:
        p.error("the real sizes need a CUDA device (use --tiny on a CPU)")
    if (args.frames - 1) % 4 or args.size[0] % 16 or args.size[1] % 16:
        p.error("frames must be 4k+1 and the sides multiples of 16")
    args.modes = modes
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(f"# {msg}", file=sys.stderr, flush=True))
    variants = [v for v in ([False, True] if (args.fp8 or args.fp8_only) else [False]) if v or not args.fp8_only]
    configs = [(m, f) for f in variants for m in args.modes]
    isolate = args.isolate == "yes" or (args.isolate == "auto" and torch.device(args.device).type == "cuda")
    if not args.tiny:
        torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for offload, fp8 in configs:
        log(f"offload={offload} fp8={fp8}")
        if isolate and not args.single and len(configs) > 1:
            cmd = [sys.executable, os.path.abspath(__file__), "--single", "--offload", offload, "--isolate", "no",
                   "--steps", str(args.steps), "--frames", str(args.frames), "--size", "x".join(map(str, args.size)),
                   "--cfg", str(args.cfg), "--group-level", args.group_level, "--blocks-per-group",
                   str(args.blocks_per_group), "--device", args.device] + (["--fp8-only"] if fp8 else []) \
                + (["--attention", args.attention] if args.attention else []) + (["--tiny"] if args.tiny else []) \
                + (["--quiet"] if args.quiet else [])
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else dict(offload=offload, fp8=fp8,
                                                          error=f"subprocess exited with {proc.returncode}")
        else:
            row = run_one(args, offload, fp8, log)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
