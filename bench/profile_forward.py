"""Where one DiT forward's time goes (GPU): kernels by kind, each kind against its measured ceiling.

Usage (GPU; no weights, no network):
    python bench/profile_forward.py [--frames 49] [--size 512x512] [--variants quality,fp8]
                                    [--repeats 5] [--json out.jsonl]
    python bench/profile_forward.py --tiny     # CPU smoke test of the same code path

Builds the real-size pipeline with random weights (bench/generate.py), records the inputs of one guided denoiser
evaluation (``predict_velocity``: batched CFG, i.e. one DiT call of batch 2), then for each variant, cumulatively:

    quality   ex4d's default speed settings (batched CFG, LoRA fused, best attention, compiled blocks)
    cudnn     quality with cuDNN attention instead of the automatic pick (FA4 on Hopper when the fa4 extra is in)
    tuned     quality, recompiled with inductor's coordinate-descent tuning of the fused kernels
    fp8       + fp8 matmuls in the blocks' linears (torchao, row-wise scales)            [approximate]

times the evaluation (CUDA events, median of --repeats after 3 warm-ups), profiles two more with torch.profiler
and sums the GPU kernels by kind (matmul, attention, fused elementwise, other), per DiT forward of one branch.
Then it measures each kind's ceiling on this card with the same shapes: the bf16 (and fp8 row-wise) matrix
products of one block, scaled_dot_product_attention per backend (and FA4 when installed) at the self-attention shape, and a device copy.
``achievable`` = the forward's matmul FLOPs at the measured matmul rate + attention FLOPs at the fastest measured
attention backend: what this card's available kernels allow, against which the measured forward is compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import load_sibling  # noqa: E402  (also makes ex4d importable)


def kernel_kind(name: str) -> str:
    """matmul / attention / elementwise (Triton-fused) / other, from a CUDA kernel's name."""
    n = name.lower()
    if n.startswith("triton"):  # inductor's fused kernels (their names list the ops they absorbed, attention's too)
        return "elementwise"
    if any(k in n for k in ("fmha", "flash", "sdpa", "attention", "attn")):
        return "attention"
    if any(k in n for k in ("gemm", "nvjet", "xmma", "cutlass", "scaled_mm", "wgmma", "matmul")):
        return "matmul"
    return "other"


def _timed(fn, repeats: int, device) -> list[float]:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
    return times


def profile_kernels(fn, calls: int = 2) -> tuple[dict, list]:
    """GPU kernel seconds per call of ``fn``, by kind, and the top kernels (name, count, seconds per call)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    per_name: dict[str, list] = {}
    for evt in prof.events():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        seconds = evt.device_time / 1e6  # µs
        kind = kernel_kind(evt.name)
        if "memcpy" in evt.name.lower() or "memset" in evt.name.lower():
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + seconds / calls
        entry = per_name.setdefault(evt.name, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds / calls
    top = sorted(((n, c // calls, s) for n, (c, s) in per_name.items()), key=lambda r: -r[2])[:12]
    return kinds, top


def gemm_ceilings(tokens: int, t: dict, device, fp8: bool) -> dict:
    """TFLOP/s of the block's matrix products (bf16 ``F.linear`` with bias, and fp8 row-wise ``_scaled_mm``)."""
    d, f = t["num_attention_heads"] * t["attention_head_dim"], t["ffn_dim"]
    shapes = {"proj d→d": (d, d), "qkv d→3d": (d, 3 * d), "ffn up d→f": (d, f), "ffn down f→d": (f, d)}
    out = {}
    for label, (k, n) in shapes.items():
        x = torch.randn(tokens, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16) / k**0.5
        b = torch.randn(n, device=device, dtype=torch.bfloat16)
        flops = 2 * tokens * k * n
        s = statistics.median(_timed(lambda: torch.nn.functional.linear(x, w, b), 10, device))
        out[f"bf16 {label}"] = round(flops / s / 1e12, 1)
        if fp8:
            f8 = torch.float8_e4m3fn
            xs = x.abs().amax(dim=1, keepdim=True).float() / 448
            ws = w.abs().amax(dim=1, keepdim=True).float() / 448
            xq, wq = (x / xs).to(f8), (w / ws).to(f8)
            try:
                mm = lambda: torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws.t(), bias=b,  # noqa: E731
                                              out_dtype=torch.bfloat16)
                mm()
                s = statistics.median(_timed(mm, 10, device))
                out[f"fp8 {label}"] = round(flops / s / 1e12, 1)
            except RuntimeError as exc:
                out[f"fp8 {label}"] = f"error: {str(exc).splitlines()[0][:120]}"
    return out


def attention_ceilings(batch: int, heads: int, tokens: int, head_dim: int, device) -> dict:
    """TFLOP/s of non-causal self-attention (B, H, L, D) per SDPA backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(batch, tokens, heads, head_dim, device=device, dtype=torch.bfloat16).transpose(1, 2)
               for _ in range(3))  # diffusers' layout: (B, L, H, D) viewed as (B, H, L, D)
    flops = 4 * batch * heads * tokens * tokens * head_dim
    out = {}
    for name in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
                fn()
                s = statistics.median(_timed(fn, 5, device))
            out[name.lower()] = round(flops / s / 1e12, 1)
        except (RuntimeError, AttributeError) as exc:
            out[name.lower()] = f"error: {str(exc).splitlines()[0][:120]}"
    from ex4d.inpaint.fa4 import fa4_attention, fa4_supported

    if fa4_supported(torch.device(device)):  # FlashAttention-4 from PyPI (extra fa4), diffusers' layout directly
        ql, kl, vl = (t.transpose(1, 2) for t in (q, k, v))
        try:
            with torch.no_grad():
                fa4_attention(ql, kl, vl)  # first call compiles the CuTe-DSL kernel
                s = statistics.median(_timed(lambda: fa4_attention(ql, kl, vl), 5, device))
            out["fa4"] = round(flops / s / 1e12, 1)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            out["fa4"] = f"error: {str(exc).splitlines()[0][:120]}"
    return out


def copy_bandwidth(device) -> float:
    x = torch.empty(2**30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    s = statistics.median(_timed(lambda: y.copy_(x), 10, device))
    return round(2 * x.numel() / s / 1e12, 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="quality,cudnn,fp8")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--size", default="512x512")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    gen, speed_bench = load_sibling("generate"), load_sibling("speed")
    from ex4d.inpaint.memory import configure_memory
    from ex4d.inpaint.speed import SpeedSettings, configure_speed, set_model_attention_backend, uncompile_blocks

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    sizes = gen.TINY if args.tiny else gen.REAL
    frames, (height, width) = (5, (32, 32)) if args.tiny else (args.frames, gen._size(args.size))
    dtype = torch.bfloat16 if cuda else torch.float32
    log = lambda msg: print(f"# {msg}", file=sys.stderr, flush=True)  # noqa: E731
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    pipe = gen.build_pipeline(sizes, device, dtype, "none", False, log)
    configure_memory(pipe, device, offload="none")
    pipe.set_progress_bar_config(disable=True)
    color, mask = gen.synthetic_videos(frames, height, width)
    captured = {}
    original = pipe.predict_velocity

    def capture(*a, **kw):
        captured.setdefault("args", (a, kw))
        return original(*a, **kw)

    pipe.predict_velocity = capture
    pipe(color, mask, height=height, width=width, num_frames=frames, num_inference_steps=1, guidance_scale=5.0,
         mask_erode=0, output_type="latent")
    pipe.predict_velocity = original
    a, kw = captured["args"]

    @torch.no_grad()  # as inside the pipeline's __call__
    def step():  # one guided evaluation = one DiT call of batch 2
        return original(*a, **kw)

    t = sizes["transformer"]
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    flops = speed_bench.forward_flops(t, frames, height, width)
    d = t["num_attention_heads"] * t["attention_head_dim"]
    ctx = 512 + 257  # text + image tokens of the cross-attention
    attn_flops = t["num_layers"] * 4 * tokens * (tokens + ctx) * d  # QKᵀ and PV, self + cross
    rows, reference = [], None
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not cuda:
        variants = [v for v in variants if v != "fp8"]  # no fp8 tensor cores on the CPU
    for variant in variants:
        row = {"variant": variant, "tokens": tokens, "device": gen._env(device)["device"], "torch": torch.__version__}
        try:
            if variant == "quality":
                row["speed"] = configure_speed(pipe, SpeedSettings(compile=cuda), device)
            elif variant == "cudnn":  # quality mode with cuDNN attention, to compare with quality's auto pick (FA4)
                uncompile_blocks(pipe.transformer)
                torch._dynamo.reset()
                set_model_attention_backend(pipe.transformer, "_native_cudnn" if cuda else "native")
                row["attention"] = "_native_cudnn" if cuda else "native"
                if cuda:
                    pipe.transformer.compile_repeated_blocks(fullgraph=True)
            elif variant == "tuned":
                import torch._inductor.config as inductor_config

                uncompile_blocks(pipe.transformer)
                torch._dynamo.reset()  # drop the compiled graphs: the tuned ones are compiled afresh
                inductor_config.coordinate_descent_tuning = True
                if cuda:
                    pipe.transformer.compile_repeated_blocks(fullgraph=True)
            elif variant == "fp8":
                from ex4d.inpaint.quantize import enable_fp8_matmuls

                uncompile_blocks(pipe.transformer)
                row["fp8_layers"] = enable_fp8_matmuls(pipe.transformer, device)
                if cuda:
                    pipe.transformer.compile_repeated_blocks(fullgraph=True)
            else:
                raise ValueError(f"unknown variant {variant!r}")
            w0 = time.perf_counter()
            for _ in range(3 if cuda else 1):  # compile + autotune
                v = step()
            row["compile_s"] = round(time.perf_counter() - w0, 1)
            if reference is None:
                reference = v.float()
            row["rel_l2_vs_quality"] = round(((v.float() - reference).norm() / reference.norm()).item(), 5)
            if cuda:
                times = _timed(step, args.repeats, device)
                row["forward_s"] = round(statistics.median(times) / 2, 4)  # batch 2 = both branches
                row["forward_spread_s"] = round((max(times) - min(times)) / 2, 4)
                kinds, top = profile_kernels(step)
                row["kernels_s"] = {k: round(s / 2, 4) for k, s in sorted(kinds.items())}
                row["top_kernels"] = [(n[:100], c, round(s / 2, 4)) for n, c, s in top]
                row["matmul_tflops_achieved"] = round((flops - attn_flops) / kinds.get("matmul", float("nan")) * 2 / 1e12, 1)
                row["attention_tflops_achieved"] = round(attn_flops / kinds.get("attention", float("nan")) * 2 / 1e12, 1)
        except Exception as exc:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        rows.append(row)
        print(json.dumps(row), flush=True)

    if cuda:
        del pipe
        torch.cuda.empty_cache()
        ceil = {"gemm_tflops": gemm_ceilings(2 * tokens, t, device, fp8=True),
                "attention_tflops": attention_ceilings(2, t["num_attention_heads"], tokens, t["attention_head_dim"],
                                                       device),
                "copy_tb_s": copy_bandwidth(device)}
        gemm_bf16 = [v for k, v in ceil["gemm_tflops"].items() if k.startswith("bf16") and isinstance(v, float)]
        att = [v for v in ceil["attention_tflops"].values() if isinstance(v, float)]
        if gemm_bf16 and att:
            ceil["achievable_forward_s"] = round((flops - attn_flops) / (statistics.mean(gemm_bf16) * 1e12)
                                                 + attn_flops / (max(att) * 1e12), 4)  # cross-attn at the self rate
        ceil.update(variant="ceilings", forward_flops=flops, attention_flops=attn_flops)
        rows.append(ceil)
        print(json.dumps(ceil), flush=True)
    if args.json:
        with open(args.json, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
