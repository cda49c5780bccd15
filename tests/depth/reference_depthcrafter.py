"""The reference's depth step restated independently, for the parity tests (not ex4d's code path).

Restated from reading EX-4D's ``recon.py`` + ``utils/dc_utils.py`` + ``utils/depth_utils.py`` and Tencent's
``depthcrafter/depth_crafter_ppl.py`` + ``depthcrafter/unet.py`` (written here from scratch; diffusers'/transformers'
building blocks — UNet, VAE, CLIP, scheduler, SVD's antialiased resize, the CLIP image processor — are called as the
reference calls them):

* frames (``read_video_frames``, decord disabled in EX-4D): ``cv2.VideoCapture`` → BGR→RGB → ``cv2.resize(frame,
  (w, h))`` with h, w = ``round(side / 64)·64`` (rescaled so the longer side fits ``max_res`` = 1024); the first
  ``num_frames`` frames; then ``frames.astype(float32) / 255``;
* ``DepthCrafterDemo.infer``: ``set_seed(42)`` (global RNG), the pipeline with ``height/width`` = the frames',
  5 steps, guidance 1, window 110, overlap 25, ``output_type="np"``; then channel mean ``sum(-1) / 3``, clip-wide
  min–max, ×3900, values < 1e-5 set to 1e-5, 10000 / d, clipped to [1e-4, 1e4];
* the pipeline: [-1, 1] input; CLIP embeddings of the whole clip resized to 224² at once (chunks of 8 through the
  image processor + encoder); noise augmentation from the global RNG; VAE ``latent_dist.mode()`` in chunks of 8;
  time ids (7, 127, 0.02); the initial noise (one window) × ``init_noise_sigma``; the window loop with noise reuse
  and re-noising of the overlap, linear blending; decode with ``1 / scaling_factor · latents`` in chunks of 8;
  ``(x·0.5 + 0.5).clamp(0, 1)``;
* DepthCrafter's UNet: SVD's UNet whose spatio-temporal transformers receive one CLIP embedding per frame
  (``(B·T, 1, D)``) — done here with forward pre-hooks on diffusers' stock UNet, not with ex4d's ``unet_forward``.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def read_frames(path, num_frames: int, max_res: int = 1024) -> np.ndarray:
    """EX-4D's OpenCV frame reader: (T, h, w, 3) uint8 RGB."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    H, W = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h, w = round(H / 64) * 64, round(W / 64) * 64
    if max(h, w) > max_res:
        s = max_res / max(H, W)
        h, w = round(H * s / 64) * 64, round(W * s / 64) * 64
    frames = []
    while cap.isOpened() and len(frames) < num_frames:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (w, h)))
    cap.release()
    return np.stack(frames)


@contextlib.contextmanager
def per_frame_context(unet, frame_context: torch.Tensor):
    """Within the block, ``unet``'s spatio-temporal transformers see ``frame_context`` (B, T, D) as (B·T, 1, D)."""
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    flat = frame_context.flatten(0, 1).unsqueeze(1)

    def swap(module, args, kwargs):
        kwargs["encoder_hidden_states"] = flat
        return args, kwargs

    hooks = [m.register_forward_pre_hook(swap, with_kwargs=True) for m in unet.modules()
             if isinstance(m, TransformerSpatioTemporalModel)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def depthcrafter_unet(unet, sample, t, frame_context, added_time_ids):
    with per_frame_context(unet, frame_context):
        return unet(sample, t, encoder_hidden_states=frame_context[:, :1], added_time_ids=added_time_ids).sample


@torch.inference_mode()
def run_pipeline(frames: np.ndarray, unet, vae, image_encoder, feature_extractor, scheduler, steps: int = 5,
                 guidance: float = 1.0, window: int = 110, overlap: int = 25, seed: int = 42,
                 noise_aug: float = 0.02, chunk: int = 8) -> dict:
    """The reference's depth step on uint8 frames (T, H, W, 3); returns every stage (fp32, CPU)."""
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

    stages = {}
    # DepthCrafterDemo.infer: diffusers' set_seed seeds python, numpy and torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    x = frames.astype(np.float32) / 255.0
    T = x.shape[0]
    if T <= window:
        window, overlap = T, 0
    stride = window - overlap
    video = torch.from_numpy(x.transpose(0, 3, 1, 2)) * 2.0 - 1.0
    stages["video"] = video

    small = (_resize_with_antialiasing(video.float(), (224, 224)) + 1.0) / 2.0
    embeds = []
    for i in range(0, T, chunk):
        pix = feature_extractor(images=small[i:i + chunk], do_normalize=True, do_center_crop=False,
                                do_resize=False, do_rescale=False, return_tensors="pt").pixel_values
        embeds.append(image_encoder(pix).image_embeds)
    context = torch.cat(embeds)[None]
    stages["context"] = context

    aug = torch.randn(video.shape)
    noisy = video + noise_aug * aug
    cond = torch.cat([vae.encode(noisy[i:i + chunk]).latent_dist.mode() for i in range(0, T, chunk)])[None]
    stages["cond"] = cond
    time_ids = torch.tensor([[7, 127, noise_aug]], dtype=context.dtype)

    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (1, window, unet.config.in_channels // 2, video.shape[-2] // vae_scale, video.shape[-1] // vae_scale)
    init = torch.randn(shape) * scheduler.init_noise_sigma
    stages["init_noise"] = init

    weights = torch.linspace(0, 1, overlap).view(1, overlap, 1, 1, 1) if overlap > 0 else None
    result, start, stages["windows"] = None, 0, []
    while start < T - overlap:
        end = min(start + window, T)
        scheduler.set_timesteps(steps)
        latents = init[:, :end - start].clone()
        init = torch.cat([init[:, -overlap:], init[:, :stride]], dim=1)
        cond_w, ctx_w = cond[:, start:end], context[:, start:end]
        for i, t in enumerate(timesteps):
            if result is not None and i == 0:
                latents[:, :overlap] = (result[:, -overlap:]
                                        + latents[:, :overlap] / scheduler.init_noise_sigma * scheduler.sigmas[i])
            inp = torch.cat([scheduler.scale_model_input(latents, t), cond_w], dim=2)
            pred = depthcrafter_unet(unet, inp, t, ctx_w, time_ids)
            if guidance > 1:
                inp_u = scheduler.scale_model_input(latents, t)
                inp_u = torch.cat([inp_u, torch.zeros_like(inp_u)], dim=2)
                pred_u = depthcrafter_unet(unet, inp_u, t, torch.zeros_like(ctx_w), time_ids)
                pred = pred_u + guidance * (pred - pred_u)
            latents = scheduler.step(pred, t, latents).prev_sample
        stages["windows"].append(latents.clone())
        if result is None:
            result = latents.clone()
        else:
            result[:, -overlap:] = latents[:, :overlap] * weights + result[:, -overlap:] * (1 - weights)
            result = torch.cat([result, latents[:, overlap:]], dim=1)
        start += stride
    stages["latents"] = result

    flat = 1 / vae.config.scaling_factor * result.flatten(0, 1)
    out = torch.cat([vae.decode(flat[i:i + chunk], num_frames=flat[i:i + chunk].shape[0]).sample
                     for i in range(0, T, chunk)]).float()
    out = (out * 0.5 + 0.5).clamp(0, 1)
    stages["decoded"] = out  # (T, 3, h, w)
    res = out.permute(0, 2, 3, 1).numpy()  # output_type="np": (T, h, w, 3)

    res = res.sum(-1) / res.shape[-1]
    n = (res - res.min()) / (res.max() - res.min())
    depth = torch.from_numpy(n.copy()).unsqueeze(1)
    depth *= 3900
    depth[depth < 1e-5] = 1e-5
    depth = (10000.0 / depth).clip(1e-4, 1e4)
    stages["depth"] = depth[:, 0].numpy()  # (T, h, w)
    return stages
