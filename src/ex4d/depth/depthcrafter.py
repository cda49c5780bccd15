"""``depthcrafter``: the reference's depth model (spec §2.2), DepthCrafter on diffusers' Stable Video Diffusion parts.

Components and where they come from (the reference's choices):

* UNet: ``tencent/DepthCrafter`` (``config.json`` + weights at the repository root; a ``unet/`` subfolder is also
  accepted), a ``UNetSpatioTemporalConditionModel`` checkpoint (same config and weight names as SVD's UNet: 8 input
  channels = 4 noisy + 4 conditioning latents).
* VAE (``AutoencoderKLTemporalDecoder``), CLIP image encoder (``CLIPVisionModelWithProjection``), Euler scheduler and
  the CLIP normalisation: ``stabilityai/stable-video-diffusion-img2vid`` (fp16 variant) — DepthCrafter's own default
  is ``…-img2vid-xt``; either works, pass ``svd=``.

Inference (DepthCrafter's pipeline, as specified in §2.2; our code):

1. frames (T, H, W, 3) → [-1, 1] in the model dtype; sides must be multiples of the UNet's total stride (64 for the real model: the
   reference's frame reader guarantees it; other sizes are resized for the model and the result resized back);
2. per-frame CLIP embeddings: 224×224 antialiased bicubic resize, back to [0, 1], CLIP mean/std, ``image_embeds``;
3. noise augmentation ``frames + 0.02·ε`` (the seeded generator's first draw), VAE encode → ``latent_dist.mode()``
   (unscaled, as SVD conditions), in fp32 when the fp16 VAE asks to be upcast;
4. added time ids (fps 7, motion bucket 127, noise_aug 0.02) — passed as given, **not** SVD's fps − 1;
5. windows of ``window`` frames sharing ``overlap`` frames (T ≤ window → one window of T frames, overlap 0: the
   reference's 49-frame case). One noise tensor of ``window`` frames (the generator's second draw, times the
   scheduler's initial sigma) is reused: each window takes its first n frames, and the next window's noise starts with
   the last ``overlap`` noises of this one. At the first step of every later window its overlapping latents are set to
   the previous result plus that noise at σ₀ (``x = z_prev + ε·σ₀``); each window is denoised with ``steps`` Euler
   steps (guidance 1 = no CFG; above 1, a second UNet call on zero image embeddings and zero latents); the
   overlapping latents are then blended linearly (weight of the new window rising 0 → 1 across the overlap);
6. VAE decode (latents multiplied by ``1/scaling_factor``, as the pipeline does; chunks of ``decode_chunk_size``
   frames), to [0, 1];
7. the reference's conversion (§2.3): channel mean, clip-wide min–max, 3900/10000.

The one architectural difference from SVD: DepthCrafter's UNet is conditioned on **one CLIP embedding per frame**
(context (B·T, 1, D)) instead of one image embedding repeated over the frames. :func:`unet_forward` runs diffusers'
UNet blocks with that per-frame context; everything else is diffusers' modules as they are.

On the CPU in fp32 every stage equals the reference's bit for bit, from the mp4 (ex4d's frame reader reproduces
OpenCV's decode and resize) to the depth maps: ``tests/depth/test_depthcrafter_parity.py``.

Not reproduced bit for bit: the reference seeds the global RNG (``set_seed(42)``) and lets the pipeline draw from
it; here a ``torch.Generator`` on the model's device seeded with ``seed`` draws the same two tensors in the same
order (on CUDA this is the same stream as the seeded global generator, but kernel-level nondeterminism and
attention backends — the reference uses xformers and attention slicing — still differ in fp16).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ex4d.depth.base import DepthResult
from ex4d.depth.convert import disparity_to_depth
from ex4d.depth.weights import choose_variant, default_dtype, require_files, resolve_model_dir
from ex4d.errors import InputError
from ex4d.utils.device import resolve_device

__all__ = ["DepthCrafterBackend", "UNET_ID", "SVD_ID", "unet_forward", "window_starts", "blend_overlap",
           "CLIP_MEAN", "CLIP_STD"]

UNET_ID = "tencent/DepthCrafter"
SVD_ID = "stabilityai/stable-video-diffusion-img2vid"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
SVD_PATTERNS = ["model_index.json", "scheduler/*", "feature_extractor/*", "vae/config.json",
                "vae/diffusion_pytorch_model.fp16.safetensors", "image_encoder/config.json",
                "image_encoder/model.fp16.safetensors"]
UNET_PATTERNS = ["config.json", "diffusion_pytorch_model*.safetensors"]


# ----------------------------------------------------------------------------------------------- windowing
def window_starts(num_frames: int, window: int, overlap: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(window, overlap, [(start, end), ...]) actually used for a clip of ``num_frames`` frames.

    A clip no longer than ``window`` is one window (overlap 0). Otherwise windows start every ``window − overlap``
    frames while ``start < num_frames − overlap``; the last one may be shorter.
    """
    if window < 1 or overlap < 0:
        raise InputError(f"window must be ≥ 1 and overlap ≥ 0, got window={window}, overlap={overlap}")
    if num_frames <= window:
        return num_frames, 0, [(0, num_frames)]
    if overlap >= window:
        raise InputError(f"overlap ({overlap}) must be smaller than the window ({window})")
    stride = window - overlap
    spans, start = [], 0
    while start < num_frames - overlap:
        spans.append((start, min(start + window, num_frames)))
        start += stride
    return window, overlap, spans


def blend_overlap(previous: torch.Tensor, current: torch.Tensor, overlap: int) -> torch.Tensor:
    """Join window results along dim 1: the last ``overlap`` frames of ``previous`` and the first of ``current`` are
    mixed with weights w = linspace(0, 1, overlap) for ``current`` and 1 − w for ``previous``."""
    if overlap == 0:
        return torch.cat([previous, current], dim=1)
    w = torch.linspace(0.0, 1.0, overlap, device=current.device, dtype=current.dtype)
    w = w.view(1, overlap, *([1] * (current.dim() - 2)))
    mixed = current[:, :overlap] * w + previous[:, -overlap:] * (1 - w)
    return torch.cat([previous[:, :-overlap], mixed, current[:, overlap:]], dim=1)


# ---------------------------------------------------------------------------------------------------- UNet
def unet_forward(unet, sample: torch.Tensor, timestep, frame_context: torch.Tensor,
                 added_time_ids: torch.Tensor) -> torch.Tensor:
    """DepthCrafter's UNet step: diffusers' ``UNetSpatioTemporalConditionModel`` blocks with per-frame context.

    Args:
        unet: a ``UNetSpatioTemporalConditionModel``.
        sample: (B, T, C_in, h, w).
        timestep: scalar (tensor or number), the scheduler's (continuous) timestep.
        frame_context: (B, T, D) one embedding per frame (SVD would pass (B, 1, D) for all frames).
        added_time_ids: (B, 3).

    Returns:
        (B, T, C_out, h, w).
    """
    B, T = sample.shape[:2]
    dtype = unet.conv_in.weight.dtype
    sample = sample.to(dtype)
    t = torch.as_tensor(timestep, device=sample.device)
    t = (t.reshape(1) if t.dim() == 0 else t).to(sample.device).expand(B)
    emb = unet.time_embedding(unet.time_proj(t).to(dtype))
    added = unet.add_time_proj(added_time_ids.flatten()).reshape(B, -1).to(emb.dtype)
    emb = (emb + unet.add_embedding(added)).repeat_interleave(T, dim=0)
    context = frame_context.reshape(B * T, 1, frame_context.shape[-1]).to(sample.dtype)
    x = unet.conv_in(sample.flatten(0, 1))
    indicator = torch.zeros(B, T, dtype=x.dtype, device=x.device)

    residuals = (x,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
        else:
            x, res = block(hidden_states=x, temb=emb, image_only_indicator=indicator)
        residuals += res
    x = unet.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
    for block in unet.up_blocks:
        res, residuals = residuals[-len(block.resnets):], residuals[:-len(block.resnets)]
        if getattr(block, "has_cross_attention", False):
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context,
                      image_only_indicator=indicator)
        else:
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, image_only_indicator=indicator)
    x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
    return x.reshape(B, T, *x.shape[1:])


def _resize_224(x: torch.Tensor) -> torch.Tensor:
    """SVD's CLIP resize: antialiased (Gaussian pre-blur) bicubic to 224×224; torch's antialias as a fallback."""
    try:
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )
    except ImportError:  # pragma: no cover - private helper moved
        return F.interpolate(x, size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", align_corners=True, antialias=True)
    return _resize_with_antialiasing(x, (CLIP_SIZE, CLIP_SIZE))


def _subfolder(root: Path, name: str) -> Path:
    return root / name if (root / name / "config.json").is_file() else root


class DepthCrafterBackend:
    """DepthCrafter (module docstring). Loading happens in the constructor; ``estimate`` runs the windows."""

    name = "depthcrafter"
    estimates_intrinsics = False

    def __init__(self, unet: str | os.PathLike = UNET_ID, svd: str | os.PathLike = SVD_ID, device="auto", dtype=None,
                 window: int = 110, overlap: int = 25, steps: int = 5, guidance: float = 1.0, seed: int = 42,
                 noise_aug_strength: float = 0.02, fps_id: int = 7, motion_bucket_id: int = 127,
                 decode_chunk_size: int = 8, download: bool = True):
        from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionModelWithProjection

        if window < 1 or overlap < 0 or overlap >= window:
            raise InputError(f"need window ≥ 1 and 0 ≤ overlap < window, got window={window}, overlap={overlap}")
        if steps < 1 or decode_chunk_size < 1:
            raise InputError(f"steps and decode_chunk_size must be ≥ 1, got {steps}, {decode_chunk_size}")
        if not math.isfinite(guidance) or guidance < 0:
            raise InputError(f"guidance must be ≥ 0, got {guidance}")
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.dtype = default_dtype(self.device, dtype)
        unet_root = resolve_model_dir(unet, "the DepthCrafter UNet", "--depth-model", UNET_PATTERNS, download)
        svd_root = resolve_model_dir(svd, "the Stable Video Diffusion components", "--depth-svd", SVD_PATTERNS,
                                     download, extra_hint="the hub repository is gated: accept its licence on "
                                     "huggingface.co and log in (hf auth login) before downloading")
        unet_dir = _subfolder(unet_root, "unet")
        vae_dir, enc_dir = svd_root / "vae", svd_root / "image_encoder"
        weights = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                   "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors.index.json")
        require_files(unet_dir, "DepthCrafter UNet (diffusers unet/)", [("config.json",), weights])
        require_files(svd_root, "Stable Video Diffusion (diffusers layout)",
                      [("vae/config.json",), ("image_encoder/config.json",), ("scheduler/scheduler_config.json",)])
        require_files(vae_dir, "SVD VAE", [tuple(weights)])
        require_files(enc_dir, "SVD CLIP image encoder",
                      [("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin")])
        try:
            self.unet = UNetSpatioTemporalConditionModel.from_pretrained(
                unet_dir, torch_dtype=self.dtype,
                variant=choose_variant(unet_dir, "diffusion_pytorch_model", self.dtype))
            self.vae = AutoencoderKLTemporalDecoder.from_pretrained(
                vae_dir, torch_dtype=self.dtype, variant=choose_variant(vae_dir, "diffusion_pytorch_model", self.dtype))
            self.image_encoder = CLIPVisionModelWithProjection.from_pretrained(
                enc_dir, dtype=self.dtype, variant=choose_variant(enc_dir, "model", self.dtype))
            self.scheduler = EulerDiscreteScheduler.from_pretrained(svd_root / "scheduler")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise InputError(f"cannot load DepthCrafter from {unet_dir} and {svd_root} "
                             f"({type(exc).__name__}: {exc})") from None
        self._configure(self._clip_normalisation(svd_root), {"unet": str(unet), "svd": str(svd)}, window=window,
                        overlap=overlap, steps=steps, guidance=guidance, seed=seed,
                        noise_aug_strength=noise_aug_strength, fps_id=fps_id, motion_bucket_id=motion_bucket_id,
                        decode_chunk_size=decode_chunk_size)

    @classmethod
    def from_components(cls, unet, vae, image_encoder, scheduler, clip_mean=CLIP_MEAN, clip_std=CLIP_STD,
                        window: int = 110, overlap: int = 25, steps: int = 5, guidance: float = 1.0, seed: int = 42,
                        noise_aug_strength: float = 0.02, fps_id: int = 7, motion_bucket_id: int = 127,
                        decode_chunk_size: int = 8) -> "DepthCrafterBackend":
        """A backend around already built components (all on one device; the UNet's dtype is the compute dtype)."""
        self = cls.__new__(cls)
        param = next(unet.parameters())
        self.unet, self.vae, self.image_encoder, self.scheduler = unet, vae, image_encoder, scheduler
        self.device, self.dtype = param.device, param.dtype
        self._configure((tuple(clip_mean), tuple(clip_std)), {"unet": "in-memory", "svd": "in-memory"},
                        window=window, overlap=overlap, steps=steps, guidance=guidance, seed=seed,
                        noise_aug_strength=noise_aug_strength, fps_id=fps_id, motion_bucket_id=motion_bucket_id,
                        decode_chunk_size=decode_chunk_size)
        return self

    def _configure(self, clip_norm, sources: dict, **settings) -> None:
        for module in (self.unet, self.vae, self.image_encoder):
            module.to(self.device).eval()
        self.clip_mean, self.clip_std = clip_norm
        expected = self.unet.add_embedding.linear_1.in_features
        if self.unet.config.addition_time_embed_dim * 3 != expected or self.unet.config.in_channels != \
                2 * self.vae.config.latent_channels:
            raise InputError(f"{sources['unet']}: UNet does not fit the SVD VAE (in_channels "
                             f"{self.unet.config.in_channels}, added-time input {expected})")
        for key, value in settings.items():
            setattr(self, key, value)
        self.sources = sources

    @staticmethod
    def _clip_normalisation(root: Path):
        path = root / "feature_extractor" / "preprocessor_config.json"
        try:
            cfg = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            cfg = {}
        return tuple(cfg.get("image_mean", CLIP_MEAN)), tuple(cfg.get("image_std", CLIP_STD))

    @property
    def size_multiple(self) -> int:
        """Frame sides must be multiples of this: VAE stride × UNet stride (8 × 8 = 64 for the real model)."""
        vae_stride = 2 ** (len(self.vae.config.block_out_channels) - 1)
        unet_stride = 2 ** (len(self.unet.config.down_block_types) - 1)
        return vae_stride * unet_stride

    # -------------------------------------------------------------------------------------------- stages
    def _clip_embeddings(self, video: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) in [-1, 1] -> (T, D) image embeddings."""
        mean = torch.tensor(self.clip_mean, device=video.device).view(1, 3, 1, 1)
        std = torch.tensor(self.clip_std, device=video.device).view(1, 3, 1, 1)
        out = []
        for i in range(0, video.shape[0], self.decode_chunk_size):
            x = (_resize_224(video[i:i + self.decode_chunk_size].float()) + 1.0) / 2.0
            x = ((x - mean) / std).to(self.image_encoder.dtype)
            out.append(self.image_encoder(pixel_values=x).image_embeds)
        return torch.cat(out)

    def _vae_encode(self, video: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.vae.encode(video[i:i + self.decode_chunk_size].to(self.vae.dtype)).latent_dist.mode()
                          for i in range(0, video.shape[0], self.decode_chunk_size)])

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        # Multiplied by the inverse, as diffusers' SVD pipeline does (dividing differs in the last bit).
        latents = 1 / self.vae.config.scaling_factor * latents
        out = []
        for i in range(0, latents.shape[0], self.decode_chunk_size):
            chunk = latents[i:i + self.decode_chunk_size]
            out.append(self.vae.decode(chunk.to(self.vae.dtype), num_frames=chunk.shape[0]).sample.float())
        return torch.cat(out)

    @torch.inference_mode()
    def infer(self, frames: np.ndarray, progress: bool = True, trace: dict | None = None) -> torch.Tensor:
        """The pipeline's video output (T, 3, h, w) in [0, 1] at the model's size (frames resized to a multiple of
        :attr:`size_multiple` if needed).

        ``trace``, if given, receives the intermediate tensors (for parity tests): ``video`` (T, 3, h, w) in
        [-1, 1], ``context`` (1, T, D), ``cond`` (1, T, 4, h/s, w/s), ``init_noise`` (1, window, 4, h/s, w/s),
        ``windows`` (each window's denoised latents), ``latents`` (1, T, 4, h/s, w/s) blended.
        """
        from tqdm.auto import tqdm

        T, H, W = frames.shape[:3]
        m = self.size_multiple
        h, w = max(m, round(H / m) * m), max(m, round(W / m) * m)
        dev, dtype = self.device, self.dtype
        video = torch.from_numpy(np.ascontiguousarray(frames)).to(dev).permute(0, 3, 1, 2).float() / 255.0
        if (h, w) != (H, W):
            video = F.interpolate(video, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        video = (video * 2.0 - 1.0).to(dtype)
        trace = {} if trace is None else trace
        trace["video"] = video

        generator = torch.Generator(device=dev).manual_seed(self.seed)
        context = self._clip_embeddings(video).to(dtype)[None]  # (1, T, D)
        trace["context"] = context
        noise = torch.randn(video.shape, generator=generator, device=dev, dtype=video.dtype)
        video = video + self.noise_aug_strength * noise
        upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if upcast:
            self.vae.to(torch.float32)
        try:
            cond = self._vae_encode(video).to(dtype)[None]  # (1, T, 4, h/8, w/8)
        finally:
            if upcast:
                self.vae.to(torch.float16)
        trace["cond"] = cond
        added_time_ids = torch.tensor([[self.fps_id, self.motion_bucket_id, self.noise_aug_strength]], dtype=dtype,
                                      device=dev)

        window, overlap, spans = window_starts(T, self.window, self.overlap)
        stride = window - overlap
        self.scheduler.set_timesteps(self.steps, device=dev)
        sigma_init = float(self.scheduler.init_noise_sigma)
        c_lat = self.vae.config.latent_channels
        base = torch.randn((1, window, c_lat, *cond.shape[-2:]), generator=generator, device=dev, dtype=dtype)
        base = base * sigma_init
        trace["init_noise"], trace["windows"] = base, []
        result = None
        do_cfg = self.guidance > 1.0
        with tqdm(total=len(spans) * self.steps, desc="depthcrafter", unit="step", disable=not progress,
                  leave=False) as bar:
            for start, end in spans:
                n = end - start
                self.scheduler.set_timesteps(self.steps, device=dev)
                latents = base[:, :n].clone()
                base = torch.cat([base[:, window - overlap:], base[:, :stride]], dim=1) if overlap else base
                cond_w, ctx_w = cond[:, start:end], context[:, start:end]
                for i, t in enumerate(self.scheduler.timesteps):
                    if result is not None and i == 0:
                        sigma0 = self.scheduler.sigmas[0].to(latents)
                        latents[:, :overlap] = result[:, -overlap:] + latents[:, :overlap] / sigma_init * sigma0
                    x = torch.cat([self.scheduler.scale_model_input(latents, t), cond_w], dim=2)
                    pred = unet_forward(self.unet, x, t, ctx_w, added_time_ids)
                    if do_cfg:  # a second UNet call, as DepthCrafter's pipeline (not one batch of two)
                        x_u = torch.cat([x[:, :, :c_lat], torch.zeros_like(cond_w)], dim=2)
                        uncond = unet_forward(self.unet, x_u, t, torch.zeros_like(ctx_w), added_time_ids)
                        pred = uncond + self.guidance * (pred - uncond)
                    latents = self.scheduler.step(pred, t, latents).prev_sample
                    bar.update(1)
                trace["windows"].append(latents)
                result = latents if result is None else blend_overlap(result, latents, overlap)
        trace["latents"] = result
        out = self._vae_decode(result[0])  # (T, 3, h, w) in [-1, 1]
        return (out / 2.0 + 0.5).clamp(0.0, 1.0)

    def estimate(self, frames: np.ndarray, focal_px: float | None = None, progress: bool = True) -> DepthResult:
        T, H, W = frames.shape[:3]
        video = self.infer(frames, progress)
        r = video.mean(dim=1)  # §2.3 step 1: channel mean
        if tuple(r.shape[-2:]) != (H, W):
            r = F.interpolate(r[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        depth = disparity_to_depth(r)
        window, overlap, spans = window_starts(T, self.window, self.overlap)
        info = dict(self.sources, window=window, overlap=overlap, windows=len(spans), steps=self.steps,
                    guidance=self.guidance, seed=self.seed, model_size=list(video.shape[-2:]))
        return DepthResult(depth.cpu().numpy(), None, kind="relative", backend=self.name, info=info)
