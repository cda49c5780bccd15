"""Seconds per frame of each depth backend at real model sizes with random weights (no weights, no network).

Usage (GPU):
    python bench/depth.py [--backends depthcrafter,depth-anything-v2,depth-pro] [--frames 49] [--size 512x512]
                          [--da-sizes small,base,large] [--dtype fp16] [--repeats 2] [--json out.jsonl]
    python bench/depth.py --tiny        # seconds on a CPU: same code paths, toy sizes

Models are built from their published configurations directly on the device in ``--dtype``:

* depthcrafter — SVD's UNet (diffusers' UNetSpatioTemporalConditionModel defaults = SVD img2vid: 320/640/1280/1280,
  cross-attention 1024, 8 input channels), SVD's temporal-decoder VAE (128/256/512/512), CLIP ViT-H/14 vision tower
  with projection (32 layers, 1280 wide, 16 heads, projection 1024), SVD's Euler scheduler; the reference's 5 steps,
  guidance 1, window 110 / overlap 25 (one window for ≤ 110 frames), decode chunks of 8;
* depth-anything-v2 — DINOv2 ViT-S/B/L/14 + DPT head as in the Depth-Anything-V2-{Small,Base,Large}-hf configs, input
  518 px (aspect kept, multiples of 14), batch 8;
* depth-pro — Depth Pro (three DINOv2 ViT-L/16 encoders at 384 px, 1536 px input, FoV head), batch 4.

Each backend runs ``--repeats`` times on ``--frames`` random frames of ``--size``; the first run is a warm-up and the
best of the others is reported. One JSON line per backend: seconds, seconds per frame, frames per second, peak GiB.
Needs diffusers and transformers; torch only (the video reader is not used).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SVD_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "sigma_max": 700.0, "sigma_min": 0.002,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous", "use_karras_sigmas": True,
}
DA_SIZES = {  # hidden, layers, heads, out stages, neck sizes, fusion size
    "small": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
    "base": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
    "large": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256),
}


def _dtype(name):
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def build_depthcrafter(device, dtype, tiny: bool):
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ex4d.depth.depthcrafter import DepthCrafterBackend

    with torch.device(device):
        if tiny:
            unet = UNetSpatioTemporalConditionModel(
                down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
                block_out_channels=(32, 64), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
                layers_per_block=1, cross_attention_dim=16, num_attention_heads=(2, 4))
            vae = AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * 3,
                                               block_out_channels=(32, 32, 32), layers_per_block=1)
            enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=224,
                patch_size=56, projection_dim=16))
        else:
            unet = UNetSpatioTemporalConditionModel()  # diffusers' defaults are SVD's UNet
            vae = AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * 4,
                                               block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                               sample_size=768, force_upcast=True)
            enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5))
    unet, vae, enc = unet.to(dtype), vae.to(dtype), enc.to(dtype)
    return DepthCrafterBackend.from_components(unet, vae, enc, EulerDiscreteScheduler(**SVD_SCHEDULER))


def build_depth_anything(device, dtype, tiny: bool, size: str = "large"):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from ex4d.depth.depth_anything import DepthAnythingV2Backend

    hidden, layers, heads, stages, neck, fusion = (16, 4, 2, [1, 2, 3, 4], [4, 8, 16, 16], 8) if tiny \
        else DA_SIZES[size]
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=4 * hidden, patch_size=14, image_size=518, layerscale_value=1.0,
                            out_features=[f"stage{i}" for i in stages], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=hidden, neck_hidden_sizes=neck,
                                 fusion_hidden_size=fusion, head_hidden_size=32 if not tiny else 4)
    with torch.device(device):
        model = DepthAnythingForDepthEstimation(config).to(dtype)
    pre = {"size": {"height": 56, "width": 56}} if tiny else {}
    return DepthAnythingV2Backend.from_model(model, pre, batch_size=8)


def build_depth_pro(device, dtype, tiny: bool):
    from transformers import DepthProConfig, DepthProForDepthEstimation

    from ex4d.depth.depth_pro import DepthProBackend

    if tiny:
        sub = dict(model_type="dinov2", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=32, patch_size=8, image_size=32)
        config = DepthProConfig(fusion_hidden_size=8, patch_size=32, intermediate_hook_ids=[1, 0],
                                intermediate_feature_dims=[8, 8], scaled_images_feature_dims=[16, 16, 8],
                                use_fov_model=True, image_model_config=dict(sub), patch_model_config=dict(sub),
                                fov_model_config=dict(sub))
        pre = {"size": {"height": 128, "width": 128}}
    else:
        sub = dict(model_type="dinov2", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096, patch_size=16, image_size=384, layerscale_value=1.0)
        config = DepthProConfig(use_fov_model=True, image_model_config=dict(sub), patch_model_config=dict(sub),
                                fov_model_config=dict(sub))
        pre = {}
    with torch.device(device):
        model = DepthProForDepthEstimation(config).to(dtype)
    return DepthProBackend.from_model(model, pre, batch_size=4)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(name, backend, frames, repeats, device):
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        result = backend.estimate(frames, focal_px=500.0, progress=False)  # random FoV heads say 0°
        _sync(device)
        times.append(time.perf_counter() - t0)
    assert result.depth.shape == frames.shape[:3] and np.isfinite(result.depth).all()
    best = min(times[1:]) if len(times) > 1 else times[0]
    T = frames.shape[0]
    return {"backend": name, "frames": T, "size": list(frames.shape[1:3]), "seconds": round(best, 3),
            "s_per_frame": round(best / T, 4), "fps": round(T / best, 2), "warmup_s": round(times[0], 3),
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="depthcrafter,depth-anything-v2,depth-pro")
    p.add_argument("--da-sizes", default="small,base,large")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--size", default="512x512", help="HxW")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--repeats", type=int, default=2, help="runs per backend; the first is a warm-up")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy model sizes (CPU smoke test)")
    p.add_argument("--json", help="append the JSON lines to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else _dtype(args.dtype)
    h, w = (int(v) for v in args.size.lower().split("x"))
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, h, w, 3), dtype=np.uint8)
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "tiny": args.tiny}
    jobs = []
    for name in args.backends.split(","):
        if name == "depth-anything-v2":
            jobs += [(f"depth-anything-v2-{s}", lambda s=s: build_depth_anything(device, dtype, args.tiny, s))
                     for s in args.da_sizes.split(",")]
        elif name == "depthcrafter":
            jobs.append((name, lambda: build_depthcrafter(device, dtype, args.tiny)))
        elif name == "depth-pro":
            jobs.append((name, lambda: build_depth_pro(device, dtype, args.tiny)))
        else:
            p.error(f"unknown backend {name}")
    for name, build in jobs:
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                backend = build()
            build_s = time.perf_counter() - t0
            row = bench_one(name, backend, frames, args.repeats, device)
            row["build_s"] = round(build_s, 1)
        except torch.OutOfMemoryError as exc:
            row = {"backend": name, "error": f"out of memory: {exc}"[:200]}
        row.update(meta)
        line = json.dumps(row)
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(line + "\n")
        backend = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
